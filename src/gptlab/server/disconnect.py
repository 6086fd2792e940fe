"""Stop work for a client that has gone away.

A streamed response notices a disconnect when a write fails; a plain response would otherwise
keep its engine slots busy until the whole completion is generated for nobody. Here the work
races a watcher of the ASGI ``http.disconnect`` message (the body has been read by then, so the
next message is the disconnect), as vLLM does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; cancel it and raise ClientDisconnected if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise ClientDisconnected
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
