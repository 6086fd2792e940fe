"""``/v1/chat/completions`` responses: one ``chat.completion``, or ``chat.completion.chunk``s.

A streamed choice starts with a chunk whose delta is ``{"role": "assistant", "content": ""}``,
carries its text in ``{"content": ...}`` deltas and ends with an empty delta and its
``finish_reason``, as OpenAI's do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from gptlab.server.completions import usage
from gptlab.server.errors import as_api_error
from gptlab.server.generation import Generation
from gptlab.server.logprobs import TokenTexts, chat_logprobs
from gptlab.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    DeltaMessage,
)
from gptlab.server.sse import DONE, TextFrames, sse_data


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatWriter:
    """Turns the choices of one generation into chat completion objects."""

    def __init__(self, body: ChatCompletionRequest, texts: TokenTexts, model: str) -> None:
        self.body = body
        self.texts = texts
        self.model = model
        self.id = new_id()
        self.created = int(time.time())
        self.top_k = body.top_logprobs or 0

    def response(self, gen: Generation) -> ChatCompletionResponse:
        choices = [
            ChatChoice(
                index=c.index,
                message=ChatMessageOut(content=c.text),
                logprobs=chat_logprobs(self.texts, c.token_events, self.top_k) if self.body.logprobs else None,
                finish_reason=c.finish_reason,  # type: ignore[arg-type]
            )
            for c in gen.choices
        ]
        return ChatCompletionResponse(id=self.id, created=self.created, model=self.model, choices=choices,
                                      usage=usage(gen))

    def _chunk(self, choices: list[ChatChunkChoice], **extra: object) -> bytes:
        return sse_data(ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                            choices=choices, **extra))  # type: ignore[arg-type]

    async def stream(self, gen: Generation) -> AsyncIterator[bytes]:
        frames = {c.index: TextFrames(ChatCompletionChunk(  # the common chunk, where only the text varies
            id=self.id, created=self.created, model=self.model,
            choices=[ChatChunkChoice(index=c.index, delta=DeltaMessage(content=TextFrames.MARK))])) for c in gen.choices}
        try:
            for c in gen.choices:
                yield self._chunk([ChatChunkChoice(index=c.index, delta=DeltaMessage(role="assistant", content=""))])
            async for choice, event in gen.events():
                shown = [] if event.token_id is None or choice.is_stop_token(event) else [event]
                logprobs = chat_logprobs(self.texts, shown, self.top_k) if self.body.logprobs and shown else None
                if event.text and logprobs is None:
                    yield frames[choice.index].frame(event.text)
                elif event.text or logprobs is not None:
                    yield self._chunk([ChatChunkChoice(index=choice.index, delta=DeltaMessage(content=event.text),
                                                       logprobs=logprobs)])
                if event.finish_reason is not None:
                    yield self._chunk([ChatChunkChoice(index=choice.index, delta=DeltaMessage(),
                                                       finish_reason=event.finish_reason)])  # type: ignore[arg-type]
            if self.body.include_usage:
                yield self._chunk([], usage=usage(gen))
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in the stream
            yield sse_data(as_api_error(exc).body())
        yield DONE
