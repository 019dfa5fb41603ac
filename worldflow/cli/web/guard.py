"""Who may talk to the web UI: an ASGI middleware in front of every route.

- **Host.** With `allowed_hosts`, a request whose ``Host`` header is not the address the
  server is bound to answers 400: a page on ``evil.example`` whose name is rebound to
  127.0.0.1 (DNS rebinding) reads nothing, not even with a GET.
- **Auth token.** With `auth_token` (required to bind anything but loopback), a request
  needs ``Authorization: Bearer TOKEN`` or the cookie a browser gets by opening any
  page once with ``?token=TOKEN``; otherwise 401.
- **CSRF.** A POST must carry the server's token (a per-server secret, put in every
  page's ``<meta name="csrf-token">``) in ``X-CSRF-Token``; otherwise 403. Another
  site can make a browser send a POST, but cannot read a page to learn the token.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse

if TYPE_CHECKING:
    from collections.abc import Collection

    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AUTH_COOKIE", "CSRF_HEADER", "Guard", "new_csrf_token"]

AUTH_COOKIE = "worldflow_auth"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """Checks Host, then the auth token, then (for POSTs) the CSRF token."""

    def __init__(self, app: ASGIApp, *, csrf_token: str,
                 allowed_hosts: Collection[str] | None = None,
                 auth_token: str | None = None) -> None:
        self.app = app
        self.csrf_token = csrf_token
        self.allowed_hosts = (None if allowed_hosts is None
                              else frozenset(h.lower() for h in allowed_hosts))
        self.auth_token = auth_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None:
            host = headers.get("host", "").lower()
            if host not in self.allowed_hosts:
                response = PlainTextResponse(
                    "invalid Host header: open the web UI at the address it printed",
                    status_code=400)
                await response(scope, receive, send)
                return
        if self.auth_token is not None and not self._authorized(headers):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if scope["method"] == "GET" and _same(query.get("token"), self.auth_token):
                # a browser opens the printed URL once: the token moves into a cookie
                query.pop("token")
                location = scope.get("root_path", "") + scope["path"]
                if query:
                    location += "?" + urlencode(query)
                redirect = RedirectResponse(location, status_code=303)
                redirect.set_cookie(AUTH_COOKIE, self.auth_token, httponly=True,
                                    samesite="strict", path="/")
                await redirect(scope, receive, send)
                return
            response = PlainTextResponse(
                "authentication required: send 'Authorization: Bearer TOKEN', or open the "
                "UI once with ?token=TOKEN", status_code=401,
                headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if scope["method"] not in _SAFE_METHODS and not _same(headers.get(CSRF_HEADER),
                                                              self.csrf_token):
            response = PlainTextResponse(
                "missing or invalid CSRF token: reload the page and try again",
                status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, headers: Headers) -> bool:
        assert self.auth_token is not None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(credentials.strip(), self.auth_token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            return False
        morsel = cookie.get(AUTH_COOKIE)
        return morsel is not None and _same(morsel.value, self.auth_token)
