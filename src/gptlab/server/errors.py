"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, never a bare 500.

Routes raise :class:`APIError`; FastAPI's own validation errors become 400 (not 422), unknown
routes 404, wrong methods 405, the library's typed errors 400, and anything unexpected a logged
500 in the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gptlab.errors import GptlabError

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    401: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


class APIError(Exception):
    """An error the client should see: HTTP ``status`` plus OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param_path(loc: Any) -> list[str]:
    """A pydantic error location without "body" and union-member tags such as ``list[int]``."""
    return [str(p) for p in loc if p != "body" and not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]


# OpenAI parameters this server does not implement: refused by name, not as "unknown"
NOT_IMPLEMENTED = frozenset({
    "audio", "modalities", "prediction", "reasoning_effort", "web_search_options", "functions",
    "function_call", "store", "metadata", "service_tier", "verbosity", "prompt_cache_key",
    "safety_identifier",
})
# pydantic error types that are not "invalid_value" in OpenAI's terms
ERROR_CODES = {"extra_forbidden": "unknown_parameter", "unsupported_parameter": "unsupported_parameter",
               "invalid_unicode": "invalid_unicode"}


def _informative(errors: list[Any]) -> Any:
    """Among the errors of a union (``stop`` is a string or a list...) the one that is not a type
    mismatch is the informative one: "List should have at most 4 items", not "should be a string"."""
    return next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])


def validation_error(errors: list[Any]) -> APIError:
    """The 400 for pydantic's error list: a one-line message, the parameter, and a code."""
    message, param = validation_message(errors)
    first = _informative(errors) if errors else {}
    kind = first.get("type")
    if kind == "extra_forbidden" and param in NOT_IMPLEMENTED and len(_param_path(first["loc"])) == 1:
        kind = "unsupported_parameter"
    return APIError(400, message, param=param, code=ERROR_CODES.get(str(kind), "invalid_value"))


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """A one-line message and the offending parameter from pydantic's error list."""
    if not errors:
        return "invalid request", None
    first = _informative(errors)
    loc = _param_path(first.get("loc", ()))
    kind = first.get("type")
    if kind == "extra_forbidden" and len(loc) == 1 and loc[0] in NOT_IMPLEMENTED:
        return f"{loc[0]} is not supported by this server", loc[0]
    if kind == "extra_forbidden":
        return f"Unknown parameter: '{'.'.join(loc)}'.", (loc[0] if loc else None)
    if kind == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    if not loc and kind == "missing":
        return "the request body is missing: send a JSON object", None
    if not loc and kind == "model_attributes_type":
        return "the request body must be a JSON object (sent with Content-Type: application/json)", None
    where = ".".join(loc)
    message = f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg"))
    return message, (loc[0] if loc else None)


def as_api_error(exc: BaseException) -> APIError:
    """The client's view of ``exc``: itself, a 400 for a library error, else a 500 (logged)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GptlabError):
        return APIError(400, str(exc), code="invalid_value")
    logger.error("unexpected error", exc_info=exc)
    return APIError(500, "internal server error (logged)", code="internal_error")


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error(list(exc.errors())).response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = str(exc.detail)
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return APIError(status, message, code=HTTP_CODES.get(status), headers=exc.headers).response()


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    return APIError(400, str(exc), code="invalid_value").response()


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, "internal server error (logged)", code="internal_error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Make every error ``app`` returns an OpenAI-shaped JSON body."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(GptlabError, _library_error)
    app.add_exception_handler(Exception, _unexpected_error)
