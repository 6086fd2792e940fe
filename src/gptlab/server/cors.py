"""CORS for browser clients (``--cors-origin``): the official OpenAI SDKs' preflights pass, and a
refused preflight is an OpenAI-shaped JSON 400 that says what was refused.

Starlette's middleware does the work; this subclass allows, besides the listed request headers,
every ``x-stainless-*`` header (the OpenAI JS SDK sends several, ``x-stainless-os``,
``x-stainless-retry-count``..., and adds new ones between versions), and turns its plain-text
refusal into JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from gptlab.server.errors import APIError

ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "Accept", "Accept-Language", "User-Agent",
    "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "Idempotency-Key", "X-Request-Id",
)
SDK_HEADER_PREFIX = "x-stainless-"  # the Stainless-generated OpenAI SDKs' own headers
REQUEST_HEADERS = b"access-control-request-headers"


class CORSMiddleware(StarletteCORSMiddleware):
    """Starlette's CORS for ``origins``, with the OpenAI SDK headers allowed and JSON refusals."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(app, allow_origins=list(origins), allow_methods=ALLOWED_METHODS,
                         allow_headers=ALLOWED_HEADERS)

    def preflight_response(self, request_headers: Headers) -> Response:
        requested = [h.strip().lower() for h in request_headers.get("access-control-request-headers", "").split(",")]
        sdk = [h for h in requested if h.startswith(SDK_HEADER_PREFIX)]
        others = [h for h in requested if h and not h.startswith(SDK_HEADER_PREFIX)]
        raw = [(k, v) for k, v in request_headers.raw if k.lower() != REQUEST_HEADERS]
        if others:
            raw.append((REQUEST_HEADERS, ", ".join(others).encode("latin-1")))
        response = super().preflight_response(Headers(raw=raw))  # judged without the SDK's headers
        if response.status_code == 200:
            if sdk:
                allowed = response.headers["Access-Control-Allow-Headers"]
                response.headers["Access-Control-Allow-Headers"] = ", ".join([allowed, *sdk])
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
        message = "CORS preflight refused: " + "; ".join(self._refusals(request_headers, others))
        return APIError(400, message, code="cors_refused", headers=headers).response()

    def _refusals(self, request_headers: Headers, others: list[str]) -> list[str]:
        reasons = []
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            reasons.append(f"origin {origin!r} is not allowed (start the server with --cors-origin {origin})")
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            reasons.append(f"method {method} is not allowed (only {', '.join(ALLOWED_METHODS)})")
        refused = [h for h in others if h not in self.allow_headers]
        if refused:
            reasons.append(f"request header(s) {', '.join(refused)} not allowed")
        if request_headers.get("access-control-request-private-network") is not None:
            reasons.append("private network access is not allowed")
        return reasons or ["refused"]
