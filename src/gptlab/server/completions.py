"""``/v1/completions`` responses: one response object, or a stream of chunks of the same shape.

Choice ``i`` belongs to prompt ``i // n``. With ``echo`` the prompt text comes first (in the first
chunk of each choice when streaming), and with ``logprobs`` the prompt tokens' log-probs too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence

from gptlab.server.engine import TokenEvent
from gptlab.server.errors import as_api_error
from gptlab.server.generation import Choice, Generation
from gptlab.server.logprobs import OffsetCounter, TokenTexts, completion_logprobs
from gptlab.server.prompts import Prompt
from gptlab.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from gptlab.server.sse import DONE, TextFrames, sse_data


def new_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def usage(gen: Generation) -> Usage:
    completion = gen.completion_tokens
    return Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=completion,
                 total_tokens=gen.prompt_tokens + completion)


class CompletionWriter:
    """Turns the choices of one generation into completions response objects."""

    def __init__(
        self, body: CompletionRequest, prompts: Sequence[Prompt], texts: TokenTexts, model: str
    ) -> None:
        self.body = body
        self.prompts = prompts
        self.texts = texts
        self.model = model
        self.id = new_id()
        self.created = int(time.time())

    def _text_frames(self, index: int) -> TextFrames:
        chunk = CompletionChoice(index=index, text=TextFrames.MARK, logprobs=None, finish_reason=None)
        return TextFrames(CompletionResponse(id=self.id, created=self.created, model=self.model, choices=[chunk]))

    def prompt_of(self, choice: Choice) -> Prompt:
        return self.prompts[choice.index // self.body.n]

    def response(self, gen: Generation) -> CompletionResponse:
        """The whole response, once every choice has finished."""
        choices = []
        for choice in gen.choices:
            prompt = self.prompt_of(choice)
            text = (prompt.text if self.body.echo else "") + choice.text
            logprobs = None
            if self.body.logprobs is not None:
                logprobs = self._logprobs(choice, choice.token_events, echo=self.body.echo,
                                          offsets=OffsetCounter(self.texts), text_length=len(text), first=True)
            choices.append(CompletionChoice(index=choice.index, text=text, logprobs=logprobs,
                                            finish_reason=choice.finish_reason))  # type: ignore[arg-type]
        return CompletionResponse(id=self.id, created=self.created, model=self.model, choices=choices,
                                  usage=usage(gen))

    def _logprobs(
        self, choice: Choice, events: Sequence[TokenEvent], *, echo: bool, offsets: OffsetCounter,
        text_length: int | None = None, first: bool = False,
    ) -> CompletionLogprobs:
        """``first``: these events start the choice (token healing's back-up applies to them)."""
        prompt = self.prompt_of(choice)
        return completion_logprobs(
            self.texts, offsets, events,
            prompt_ids=prompt.ids if echo else (),
            prompt_logprobs=choice.stream.prompt_logprobs if echo else None,
            text_length=text_length,
            healed_chars=choice.stream.healed_chars if first else 0,
        )

    async def stream(self, gen: Generation) -> AsyncIterator[bytes]:
        """SSE frames: a chunk per event that has text, logprobs or a finish reason; the usage
        chunk if asked; ``[DONE]``. An engine failure mid-stream is sent as an error frame."""
        offsets = {c.index: OffsetCounter(self.texts) for c in gen.choices}
        started: set[int] = set()
        frames = {c.index: self._text_frames(c.index) for c in gen.choices}
        try:
            async for choice, event in gen.events():
                first = choice.index not in started
                echo = self.body.echo and first
                started.add(choice.index)
                if not echo and self.body.logprobs is None and event.finish_reason is None:
                    if event.text:  # the common chunk: only its text varies
                        yield frames[choice.index].frame(event.text)
                    continue
                text = (self.prompt_of(choice).text if echo else "") + event.text
                shown = [] if event.token_id is None or choice.is_stop_token(event) else [event]
                logprobs = None
                if self.body.logprobs is not None:
                    logprobs = self._logprobs(choice, shown, echo=echo, offsets=offsets[choice.index], first=first)
                if not text and not (logprobs and logprobs.tokens) and event.finish_reason is None:
                    continue
                chunk = CompletionChoice(index=choice.index, text=text, logprobs=logprobs,
                                         finish_reason=event.finish_reason)  # type: ignore[arg-type]
                yield sse_data(CompletionResponse(id=self.id, created=self.created, model=self.model,
                                                  choices=[chunk]))
            if self.body.include_usage:
                yield sse_data(CompletionResponse(id=self.id, created=self.created, model=self.model,
                                                  choices=[], usage=usage(gen)))
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in the stream
            yield sse_data(as_api_error(exc).body())
        yield DONE
