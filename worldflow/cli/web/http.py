"""The web UI's HTTP plumbing: errors as answers, JSON bodies, query parameters."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from worldflow.errors import WorldError

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["MAX_BODY", "SECURITY_HEADERS", "HTTPError", "answers_errors", "int_param",
           "json_body", "value_of"]

#: the largest JSON body a POST may carry
MAX_BODY = 1_000_000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def answers_errors(kind: str) -> Callable[..., Any]:
    """Turn HTTPError and world failures into a page (`kind="html"`) or JSON answer."""
    def decorate(handler: Any) -> Any:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Request) -> Response:
            try:
                response: Response = await handler(self, request)
                return response
            except HTTPError as exc:
                error = exc
            except WorldError as exc:
                error = HTTPError(503, f"the world failed: {exc}")
            if kind == "json":
                return JSONResponse({"error": error.status, "message": error.message},
                                    status_code=error.status, headers=SECURITY_HEADERS)
            page: Response = self.page(request, "error.html", {
                "status": error.status, "message": error.message}, error.status)
            return page
        return wrapper
    return decorate


async def json_body(request: Request) -> Any:
    """The POST's JSON body (empty: None); 400 for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPError(400, "send the body as application/json")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPError(400, f"the body is larger than {MAX_BODY} bytes")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}") from exc


def value_of(body: Any, key: str) -> Any:
    """`body[key]` (a JSON value), or `body["json"]` parsed (JSON text typed in a form);
    400 naming the problem otherwise."""
    if not isinstance(body, dict) or (key not in body and "json" not in body):
        raise HTTPError(400, f'the body must be a JSON object {{"{key}": ...}} '
                             f'or {{"json": "JSON text"}}')
    if key in body:
        return body[key]
    text = body["json"]
    if not isinstance(text, str):
        raise HTTPError(400, '"json" must be a string of JSON text')
    try:
        return json.loads(text)
    except ValueError as exc:
        raise HTTPError(400, f"the {key} is not valid JSON: {exc}") from exc


def int_param(request: Request, key: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, f"{key} must be a whole number, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise HTTPError(400, f"{key} must be between {low} and {high}, got {value}")
    return value
