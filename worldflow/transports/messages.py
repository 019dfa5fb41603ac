"""The bodies of the HTTP transport's signed requests, and the paths they go to.

Stored nowhere, but sent between processes that may run different versions: new
fields get defaults and field types never change (msgspec schema evolution).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw

__all__ = [
    "FLOW_PATH",
    "PREFIX",
    "STEP_PATH",
    "WEBHOOK_ROUTE",
    "FlowRequest",
    "StepArgs",
    "StepRequest",
]

PREFIX = "/.well-known/workflow/v1"
FLOW_PATH = PREFIX + "/flow"
STEP_PATH = PREFIX + "/step"
WEBHOOK_ROUTE = PREFIX + "/webhook/{token:path}"

# no NUL: no database stores it in text, and no worldflow id or name contains one
Id = Annotated[str, Meta(min_length=1, max_length=200, pattern="^[^\x00]+$")]
Name = Annotated[str, Meta(min_length=1, max_length=500, pattern="^[^\x00]+$")]
AwareTime = Annotated[dt.datetime, Meta(tz=True)]


class StepRequest(msgspec.Struct, frozen=True):
    """One attempt of one step, to be run by the receiving process (`POST /step`).

    `input` is the step's arguments JSON as stored (``{"args": [...], "kwargs": {...}}``);
    `started_at` is when this attempt started, `workflow_started_at` when the run did.
    The answer (200) is the outcome event's JSON: step_completed, step_failed or
    step_retrying.
    """

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
    world's queue, like any other worker."""

    run_id: Id
