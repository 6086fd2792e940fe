"""Server-Sent Events: ``data: {json}\\n\\n`` frames, ending with ``data: [DONE]``.

:class:`EventStreamResponse` guarantees its ``on_close`` callback runs however the response ends
(finished, client gone, cancelled), which is where the engine slots of a stream are freed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Characters that str.splitlines() treats as line ends. SSE itself ends lines only at CR and LF
# (which JSON always escapes), but common clients (httpx's aiter_lines, for one) split on all of
# these, so inside the JSON they are written as \uXXXX escapes, which decode to the same text.
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def sse_data(payload: BaseModel | dict[str, Any]) -> bytes:
    """One SSE frame carrying ``payload`` as compact JSON, on a single line for every client."""
    text = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return b"data: " + text.translate(_LINE_BREAKS).encode("utf-8") + b"\n\n"


class TextFrames:
    """SSE frames of a response object in which only one string varies: the per-token chunks of a
    stream. ``template`` holds :attr:`MARK` where the text goes; each frame then costs one
    ``json.dumps`` of the text instead of building and serializing pydantic models (a few times
    faster, and it runs for every token of every stream). The frames equal ``sse_data``'s."""

    MARK = "\x00gptlab-text\x00"

    def __init__(self, template: BaseModel) -> None:
        head, mark, tail = template.model_dump_json().translate(_LINE_BREAKS).partition(json.dumps(self.MARK))
        if not mark:
            raise ValueError("the template does not contain TextFrames.MARK")
        self.head = b"data: " + head.encode("utf-8")
        self.tail = tail.encode("utf-8") + b"\n\n"

    def frame(self, text: str) -> bytes:
        return self.head + json.dumps(text, ensure_ascii=False).translate(_LINE_BREAKS).encode("utf-8") + self.tail


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response whose ``on_close`` always runs at the end."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
