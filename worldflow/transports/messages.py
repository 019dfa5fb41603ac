"""The bodies of the HTTP transport's signed requests, and the paths they go to.

Stored nowhere, but sent between processes that may run different versions: new
fields get defaults and field types never change (msgspec schema evolution).

One exception, on purpose: `request_id` is required. A body's shape is versioned by
its presence: version 1 bodies (worldflow before request ids) carried none and could
be replayed within the signature window; a server refuses them with 400, so a sender
that must be upgraded says so at once instead of silently losing replay protection.
Every delivery attempt carries a new id (`new_request_id()`); the same id twice is
the same delivery (see `worldflow.transports.deliveries`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw

__all__ = [
    "FLOW_PATH",
    "MESSAGE_PATH",
    "PREFIX",
    "REQUEST_ID_FIELD",
    "STEP_PATH",
    "WEBHOOK_ROUTE",
    "FlowRequest",
    "MessageRequest",
    "StepArgs",
    "StepRequest",
    "new_request_id",
]

PREFIX = "/.well-known/workflow/v1"
FLOW_PATH = PREFIX + "/flow"
STEP_PATH = PREFIX + "/step"
MESSAGE_PATH = PREFIX + "/message"
WEBHOOK_ROUTE = PREFIX + "/webhook/{token:path}"

# no NUL: no database stores it in text, and no worldflow id or name contains one
Id = Annotated[str, Meta(min_length=1, max_length=200, pattern="^[^\x00]+$")]
Name = Annotated[str, Meta(min_length=1, max_length=500, pattern="^[^\x00]+$")]
AwareTime = Annotated[dt.datetime, Meta(tz=True)]
#: a delivery's id: printable ASCII without spaces, so it logs and compares plainly
RequestId = Annotated[str, Meta(min_length=8, max_length=128, pattern="^[!-~]+$")]
#: the field whose absence marks a version 1 body
REQUEST_ID_FIELD = "request_id"


def new_request_id() -> str:
    """A fresh, unguessable id for one delivery attempt (128 random bits)."""
    return secrets.token_hex(16)


class StepRequest(msgspec.Struct, frozen=True):
    """One attempt of one step, to be run by the receiving process (`POST /step`).

    `request_id` names this delivery attempt (`new_request_id()`; a retry is a new
    attempt with a new id). `input` is the step's arguments JSON as stored
    (``{"args": [...], "kwargs": {...}}``);
    `started_at` is when this attempt started, `workflow_started_at` when the run did.
    The answer (200) is the outcome event's JSON: step_completed, step_failed or
    step_retrying.
    """

    request_id: RequestId
    run_id: Id
    workflow_name: Name
    correlation_id: Id
    step_name: Name
    attempt: Annotated[int, Meta(ge=1, le=1_000_000)]
    input: Raw
    started_at: AwareTime
    workflow_started_at: AwareTime | None = None


class StepArgs(msgspec.Struct, frozen=True):
    """The shape `StepRequest.input` must have."""

    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class FlowRequest(msgspec.Struct, frozen=True):
    """Work on this run (`POST /flow`): the receiving process claims it through the
    world's queue, like any other worker. `request_id` as in `StepRequest`."""

    request_id: RequestId
    run_id: Id


class MessageRequest(msgspec.Struct, frozen=True):
    """Send `message` (any JSON) to run `run_id` under `topic` (`POST /message`), as
    `worldflow.send` does. A delivery sent again with the same `request_id` gets the
    first answer and sends nothing more: each message is sent once. Answers: 202
    (queued), 404 (no such run), 409 (the run has ended)."""

    request_id: RequestId
    run_id: Id
    message: Raw
    topic: Annotated[str, Meta(min_length=1, max_length=200, pattern="^[^\x00]+$")] = "default"
