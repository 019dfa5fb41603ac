"""How an event changes the runs, steps and hooks tables (the projections of the log).

Every world applies the same operations, in event order, in the same transaction
as the event itself; SQL worlds map each operation name to one parameterised statement.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, NamedTuple

from worldflow.core.events import (
    HookCreated,
    HookDisposed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from worldflow.core.records import step_id_for

if TYPE_CHECKING:
    from worldflow.core.events import EventRecord

__all__ = ["Op", "project"]


class Op(NamedTuple):
    """One projection change. `name` picks the statement; `args` are its parameters.

    - ``run_started``   (run_id, at)
    - ``run_finished``  (run_id, status, output_json | None, error | None, at)
    - ``step_started``  (step_id, run_id, correlation_id, step_name, attempt, input_json, at)
        insert, or for a later attempt: status running, attempt, error cleared
    - ``step_completed`` (step_id, attempt, output_json, at)
    - ``step_retrying`` (step_id, attempt, error)        status pending
    - ``step_failed``   (step_id, attempt, error, at)
    - ``hook_created``  (token, run_id, correlation_id, at)
    - ``hook_disposed`` (token, at)
    """

    name: str
    args: tuple[object, ...]


def project(record: EventRecord) -> Op | None:
    event, run_id, at = record.event, record.run_id, record.created_at
    match event:
        case StepStarted(correlation_id=cid, step_name=name, attempt=attempt, input=inp):
            return Op("step_started",
                      (step_id_for(run_id, cid), run_id, cid, name, attempt, bytes(inp), at))
        case StepCompleted(correlation_id=cid, attempt=attempt, output=out):
            return Op("step_completed", (step_id_for(run_id, cid), attempt, bytes(out), at))
        case StepRetrying(correlation_id=cid, attempt=attempt, error=error):
            return Op("step_retrying", (step_id_for(run_id, cid), attempt, error))
        case StepFailed(correlation_id=cid, attempt=attempt, error=error):
            return Op("step_failed", (step_id_for(run_id, cid), attempt, error, at))
        case HookCreated(correlation_id=cid, token=token):
            return Op("hook_created", (token, run_id, cid, at))
        case HookDisposed(token=token):
            return Op("hook_disposed", (token, at))
        case RunStarted():
            return Op("run_started", (run_id, at))
        case RunCompleted(output=out):
            return Op("run_finished", (run_id, "completed", bytes(out), None, at))
        case RunFailed(error=error):
            return Op("run_finished", (run_id, "failed", None, error, at))
        case RunCancelled():
            return Op("run_finished", (run_id, "cancelled", None, None, at))
    return None



def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
