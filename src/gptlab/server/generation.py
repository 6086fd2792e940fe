"""One HTTP request's generation: its engine streams (``n`` per prompt), merged, measured, and
always released.

:class:`Generation` submits every request or none (a full queue cancels what was already
submitted and becomes a 429), yields ``(choice index, event)`` pairs as the engine produces them,
records the token metrics, and :meth:`Generation.close` cancels whatever is still running: call
it when the client goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from gptlab.server.engine import (
    Engine,
    GenerationRequest,
    QueueFullError,
    RequestStream,
    TokenEvent,
)
from gptlab.server.errors import APIError
from gptlab.server.metrics import ServerMetrics


@dataclass
class Choice:
    """What one stream produced, gathered as it went."""

    index: int
    request: GenerationRequest
    stream: RequestStream
    text: str = ""
    events: list[TokenEvent] = field(default_factory=list)
    finish_reason: str | None = None
    last_time: float | None = None
    aborted: bool = False  # cancelled before it finished (the client left)

    @property
    def token_events(self) -> list[TokenEvent]:
        """Events of generated tokens that count as output (a stop token is not shown)."""
        return [e for e in self.events if e.token_id is not None and not self.is_stop_token(e)]

    def is_stop_token(self, event: TokenEvent) -> bool:
        return (event.finish_reason == "stop" and event.token_id in self.request.stop_token_ids
                and not self.request.include_stop)


class Generation:
    """The streams of one API request."""

    def __init__(
        self, engine: Engine, requests: Sequence[GenerationRequest], metrics: ServerMetrics, prompt_tokens: int
    ) -> None:
        self.metrics = metrics
        self.prompt_tokens = prompt_tokens  # counted once per prompt: its n choices share it
        self.started = time.perf_counter()
        self.choices: list[Choice] = []
        self._submitted = False
        try:
            for i, request in enumerate(requests):
                self.choices.append(Choice(i, request, engine.submit(request)))
        except QueueFullError as exc:
            self.close()
            raise APIError(429, f"the server is busy: {exc}; retry shortly", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except BaseException:
            self.close()
            raise
        metrics.prompt_tokens.inc(sum(len(r.prompt_ids) for r in requests))
        self._submitted = True
        self._first_token_seen = False

    @property
    def completion_tokens(self) -> int:
        return sum(c.stream.completion_tokens for c in self.choices)

    async def events(self) -> AsyncIterator[tuple[Choice, TokenEvent]]:
        """Every stream's events as they arrive, each after its choice has been updated."""
        if len(self.choices) == 1:  # the common case: no merging, no task per token
            choice = self.choices[0]
            try:
                async for event in choice.stream:
                    self._record(choice, event)
                    yield choice, event
                    if event.finish_reason is not None:
                        return
            finally:
                self.close()
            return
        pending: dict[asyncio.Future[TokenEvent], Choice] = {}
        try:
            for choice in self.choices:
                pending[asyncio.ensure_future(choice.stream.__anext__())] = choice
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f].index):
                    choice = pending.pop(future)
                    event = future.result()  # an engine error propagates to the caller
                    self._record(choice, event)
                    if event.finish_reason is None:
                        pending[asyncio.ensure_future(choice.stream.__anext__())] = choice
                    yield choice, event
        finally:
            for future in pending:
                future.cancel()
            self.close()

    async def run(self) -> list[Choice]:
        """Wait for every stream to finish; the choices in index order."""
        async for _ in self.events():
            pass
        return self.choices

    def _record(self, choice: Choice, event: TokenEvent) -> None:
        now = time.perf_counter()
        choice.events.append(event)
        choice.text += event.text
        if event.token_id is not None:
            if not self._first_token_seen:
                self._first_token_seen = True
                self.metrics.ttft.observe(now - self.started)
            if choice.last_time is not None:
                self.metrics.inter_token.observe(now - choice.last_time)
            choice.last_time = now
        if event.finish_reason is not None:
            choice.finish_reason = event.finish_reason
            self.metrics.finished.labels(event.finish_reason).inc()
            self.metrics.generation_tokens.inc(choice.stream.completion_tokens)

    def close(self) -> None:
        """Cancel every stream that has not finished (idempotent). Once all were submitted, each
        cancelled one counts as finish_reason "abort", with the tokens it had generated."""
        for choice in self.choices:
            if choice.finish_reason is None and not choice.aborted:
                choice.stream.cancel()
                choice.aborted = True
                if self._submitted:
                    self.metrics.finished.labels("abort").inc()
                    self.metrics.generation_tokens.inc(choice.stream.completion_tokens)

