"""Webhooks: hooks resumed by plain HTTP requests from third parties.

Inside a workflow::

    wh = create_webhook()                  # wh.token, wh.url
    await notify_partner(wh.url)           # a step: hand the URL out
    request = await wh                     # a WebhookRequest
    event = request.json()                 # also .method, .headers, .query, .body, .text()

A ``GET`` or ``POST`` to ``wh.url`` (the HTTP transport's
``/.well-known/workflow/v1/webhook/{token}``; see `worldflow.transports.http.app`)
resumes the webhook with a `WebhookRequest`. `async for request in wh` takes many
requests, in the order they arrived. Webhook requests are not signed (they come from
third parties): the unguessable token is the credential, so do not log `wh.url`
where others read it.

`wh.url` is ``{WORKFLOW_BASE_URL}/.well-known/workflow/v1/webhook/{token}``, where
``WORKFLOW_BASE_URL`` (default ``http://127.0.0.1:3001``) is where the app is reachable
from outside, including any mount prefix.

The response
------------
The request is answered once its payload is stored durably (before the workflow
runs). By default that answer is ``202`` with ``{"status": "accepted"}``. The workflow
chooses another one when it creates the webhook, with `respond_with`::

    create_webhook(respond_with=200)                          # status only, empty body
    create_webhook(respond_with=(200, {"ok": True}))          # JSON body
    create_webhook(respond_with=(200, "thanks", {"x-a": "1"}))  # text body, headers
    create_webhook(respond_with=WebhookResponse(201, {...}, b"..."))

A ``str`` body is sent as ``text/plain``, ``bytes`` as ``application/octet-stream``,
anything else as JSON, unless `headers` sets ``content-type``. The response is static:
it is recorded with the webhook and sent for every request to it. (A response computed
from the request would make the sender wait for the workflow to run; keep that
outside the webhook: answer with 202 and call the sender back from a step.)

How it is stored: `create_webhook` makes a hook (whose payloads decode as
`WebhookRequest`) whose `hook_created` event carries, as its metadata, the response to
send. Only hooks made by `create_webhook` accept HTTP requests: a hook from
`create_hook` is not reachable from outside by guessing or knowing its token.

A request to an unknown token is answered 404; to a webhook whose run has ended, 410.
A ``HEAD`` request gets the status a delivery would get, and delivers nothing.
"""

from __future__ import annotations

import codecs
import os
import urllib.parse
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.core.hooks import Hook, new_hook

if TYPE_CHECKING:
    from worldflow.core.records import HookRecord
    from worldflow.core.world import World

__all__ = [
    "WEBHOOK_PATH",
    "Webhook",
    "WebhookRequest",
    "WebhookResponse",
    "create_webhook",
    "find_webhook_response",
    "webhook_url",
]

#: where the HTTP transport receives webhook requests (`{token}` percent-encoded)
WEBHOOK_PATH = "/.well-known/workflow/v1/webhook/"
DEFAULT_BASE_URL = "http://127.0.0.1:3001"


class WebhookRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """An HTTP request delivered to a webhook.

    `headers` have lower-case names (a repeated header's values joined by ``", "``);
    `query` maps each query parameter to its last value, and `query_string` is the
    raw query (for repeated parameters: ``urllib.parse.parse_qsl(query_string)``).
    """

    method: str
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    body: bytes = b""
    query_string: str = ""

    def text(self, encoding: str | None = None) -> str:
        """The body as text: in `encoding`, else the content-type's charset, else UTF-8
        (undecodable bytes become U+FFFD)."""
        return self.body.decode(encoding or self._charset(), "replace")

    def json(self, type: Any = Any) -> Any:
        """The body decoded as JSON (validated as `type` if given). Raises
        `msgspec.DecodeError` (a `ValueError`) if it is not JSON."""
        return msgspec.json.decode(self.body, type=type, strict=False)

    def _charset(self) -> str:
        content_type = self.headers.get("content-type", "")
        for param in content_type.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "charset":
                charset = value.strip().strip('"')
                try:
                    return codecs.lookup(charset).name
                except LookupError:
                    break
        return "utf-8"


class WebhookResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the HTTP transport answers to each request to a webhook."""

    status: int = 202
    headers: dict[str, str] = {}
    body: bytes = b""


DEFAULT_RESPONSE = WebhookResponse(202, {"content-type": "application/json"},
                                   b'{"status":"accepted"}')


def _response(respond_with: Any) -> WebhookResponse:
    if respond_with is None:
        return DEFAULT_RESPONSE
    if isinstance(respond_with, WebhookResponse):
        response = respond_with
    else:
        parts = respond_with if isinstance(respond_with, tuple) else (respond_with,)
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"respond_with must be a status, (status, body) or (status, "
                             f"body, headers), got {respond_with!r:.80}")
        status, body, headers = (*parts, None, None)[:3]
        headers = dict(headers or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise TypeError("respond_with headers must map str to str")
        # the server computes these for the body it sends
        headers = {k.lower(): v for k, v in headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")}
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
            headers.setdefault("content-type", "application/octet-stream")
        elif isinstance(body, str):
            data = body.encode()
            headers.setdefault("content-type", "text/plain; charset=utf-8")
        else:
            try:
                data = msgspec.json.encode(body)
            except (TypeError, msgspec.EncodeError) as exc:
                raise TypeError(f"respond_with body cannot be encoded as JSON: {exc}") from None
            headers.setdefault("content-type", "application/json")
        response = WebhookResponse(status, headers, data)
    if not isinstance(response.status, int) or isinstance(response.status, bool) \
            or not 200 <= response.status <= 599:
        raise ValueError(f"respond_with status must be an HTTP status from 200 to 599, "
                         f"got {response.status!r}")
    return response


def webhook_url(token: str) -> str:
    """The URL that resumes the webhook `token` (``WORKFLOW_BASE_URL`` + the path)."""
    base = (os.environ.get("WORKFLOW_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    segment = urllib.parse.quote(token, safe="")
    if segment in (".", ".."):  # would be read as a dot-segment and removed from the path
        segment = segment.replace(".", "%2E")
    return base + WEBHOOK_PATH + segment


class Webhook(Hook[WebhookRequest]):
    """A hook resumed by HTTP requests: `await wh` gives the next `WebhookRequest`,
    `async for request in wh` every one; `.token`, `.url`, `.response`."""

    response: WebhookResponse

    @property
    def url(self) -> str:
        return webhook_url(self.token)

    def __repr__(self) -> str:
        return f"<Webhook token={self.token!r}>"


class _WebhookMetadata(msgspec.Struct, frozen=True):
    """What a webhook's `hook_created` event records: the response to send."""

    webhook: WebhookResponse


_metadata_decoder = msgspec.json.Decoder(_WebhookMetadata)


def create_webhook(token: str | None = None, *, respond_with: Any = None) -> Webhook:
    """Create a webhook in the running workflow: a hook resumed by HTTP requests to
    its `.url`, each delivered as a `WebhookRequest`.

    Without `token` an unguessable one is made. `respond_with` chooses the answer to
    every request (default ``202 {"status": "accepted"}``): a status, ``(status,
    body)``, ``(status, body, headers)`` or a `WebhookResponse`.
    """
    response = _response(respond_with)
    metadata = msgspec.Raw(msgspec.json.encode(_WebhookMetadata(response)))
    webhook = new_hook(token, WebhookRequest, "create_webhook()", cls=Webhook,
                       metadata=metadata)
    webhook.response = response
    return webhook


async def find_webhook_response(world: World, hook: HookRecord) -> WebhookResponse | None:
    """The response recorded for the webhook `hook`, or None if `hook` was not made by
    `create_webhook` (so it takes no HTTP requests)."""
    metadata = hook.metadata
    if metadata is None:
        return None
    try:
        return _metadata_decoder.decode(metadata).webhook
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
