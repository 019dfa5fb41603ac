"""Signing of the HTTP transport's `/flow` and `/step` requests.

A request carries two headers::

    X-Worldflow-Timestamp: <unix seconds>
    X-Worldflow-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>

The secret is ``WORKFLOW_SECRET`` (or the `secret` given to the app and the client).
The timestamp is part of what is signed and must be within `MAX_AGE` seconds of the
receiver's clock (either way, for clock skew), so a captured request cannot be replayed
later. Signatures are compared in constant time. Within that window, a repeated
request is answered from a record instead of being run again: bodies carry a
`request_id` (see `worldflow.transports.deliveries`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_AGE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "resolve_secret",
    "sign",
    "signature_headers",
    "verify",
]

TIMESTAMP_HEADER = "x-worldflow-timestamp"
SIGNATURE_HEADER = "x-worldflow-signature"
#: seconds a signed request stays valid (and how far ahead of our clock it may be)
MAX_AGE = 300
_PREFIX = "sha256="


class SignatureError(Exception):
    """A request's signature is missing, malformed, wrong or expired (answered 401)."""


def resolve_secret(secret: str | bytes | None) -> bytes | None:
    """`secret`, else ``WORKFLOW_SECRET`` from the environment, as bytes (None: unset)."""
    if secret is None:
        secret = os.environ.get("WORKFLOW_SECRET") or None
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret:
        return None
    return secret


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def signature_headers(body: bytes, secret: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers that sign `body` (now, unless `timestamp` is given)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(body, secret, ts)}


def verify(headers: Mapping[str, str], body: bytes, secret: bytes | None, *,
           now: float | None = None, max_age: int = MAX_AGE) -> int:
    """Raise `SignatureError` unless `headers` sign `body` with `secret`, recently;
    return the unix time the request was signed at.

    `headers` must be looked up case-insensitively (lower-case names are used).
    """
    if secret is None:
        raise SignatureError("this server has no WORKFLOW_SECRET, so it accepts no signed "
                             "requests; set WORKFLOW_SECRET on both sides")
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header; sign "
                             f"the request with WORKFLOW_SECRET")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be unix seconds, got {timestamp[:40]!r}")
    ts = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - ts) > max_age:
        raise SignatureError(f"request timestamp is {int(current - ts)}s away from this "
                             f"server's clock (at most {max_age}s allowed); re-sign it, and "
                             f"check the clocks")
    expected = sign(body, secret, ts)
    # compare bytes: compare_digest refuses non-ASCII str, and the header is untrusted
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise SignatureError("bad signature: the body was not signed with this server's "
                             "WORKFLOW_SECRET")
    return ts
