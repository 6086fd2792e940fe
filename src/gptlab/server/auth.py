"""Bearer-token authentication: with an API key set, the API routes need ``Authorization: Bearer KEY``.

A pure ASGI middleware, so a request without the key is refused (401) before its body is read or
its route resolved. ``/health``, ``/metrics``, the OpenAPI document and the playground page stay
open: the page itself asks for the key and sends it with every API call.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from gptlab.server.errors import APIError


def is_protected(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/") or path in ("/tokenize", "/detokenize")


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class APIKeyMiddleware:
    """Refuse protected routes without the right Bearer token (constant-time comparison)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers", []))
        if token is None:
            error = APIError(401, "missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                             code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        elif not hmac.compare_digest(token.encode("utf-8"), self.api_key):
            error = APIError(401, "incorrect API key provided", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
        else:
            await self.app(scope, receive, send)
            return
        await error.response()(scope, receive, send)
