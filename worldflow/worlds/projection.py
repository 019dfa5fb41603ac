"""The rules every world follows when it stores events, written once.

- **Projection.** `project(record)` says how one event changes the runs, steps and hooks
  tables: one typed operation (`RunStarted`, `StepCompleted`, ...) per event that has
  one. Every world applies the operations in event order, in the same transaction as
  the events; the SQL worlds map each operation type to one parameterised statement
  (the Postgres world sends them, msgspec-encoded, to its server-side function).
- **Seq fencing.** `check_fence(run_id, last_seq, records)`: an append must continue
  the run's log exactly (first seq = last stored + 1, no gaps). Anything else means
  another worker wrote the run (or an earlier append of ours was lost), so the whole
  append is refused with `LeaseLostError`.
- **Step counts.** `step_count_changes(old, new)` says how a step's status change moves
  its run's counters (`RunRecord.steps_*`): the memory world applies it, SQLite in
  triggers on its steps table. Postgres counts the same thing another way: a live run's
  counts from its step events as it is read (`sql.run_columns`), stored on the run's
  row when it ends, so that a step's commit never touches the run's row. (There the
  steps are not a table at all: `workflow_steps` is a view that reads each step from
  its events by the same rules, so a step's commit writes its events alone.)
- **End of run.** `plan_append(records)` tells a world what else an append changes: a
  terminal event (`run_completed/failed/cancelled`) removes the run's queue job and
  inbox and disposes its active hooks, as of the terminal event's time.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from worldflow.core import events as ev
from worldflow.core.events import ErrorInfo, EventRecord
from worldflow.core.records import step_id_for
from worldflow.errors import LeaseLostError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "AppendPlan",
    "HookCreated",
    "HookDisposed",
    "ProjectionOp",
    "RunFinished",
    "RunStarted",
    "StepCompleted",
    "StepFailed",
    "StepRetrying",
    "StepStarted",
    "check_fence",
    "completions_after_starts",
    "plan_append",
    "project",
    "step_completions",
    "step_count_changes",
    "with_completions",
]


class _Op(msgspec.Struct, frozen=True, gc=False, tag_field="type", omit_defaults=True):
    pass


class RunStarted(_Op, frozen=True, tag="run_started"):
    """status running; `started_at` keeps the first start."""

    run_id: str
    at: dt.datetime


class RunFinished(_Op, frozen=True, tag="run_finished"):
    """status `status` (completed/failed/cancelled), with output or error, completed_at."""

    run_id: str
    status: str
    at: dt.datetime
    output: Raw | None = None
    error: ErrorInfo | None = None


class StepStarted(_Op, frozen=True, tag="step_started"):
    """Insert the step, or for a later attempt: status running, attempt, error cleared."""

    step_id: str
    run_id: str
    correlation_id: str
    step_name: str
    attempt: int
    input: Raw
    at: dt.datetime


class StepCompleted(_Op, frozen=True, tag="step_completed"):
    step_id: str
    attempt: int
    output: Raw
    at: dt.datetime


class StepRetrying(_Op, frozen=True, tag="step_retrying"):
    """status pending, with the failed attempt's error."""

    step_id: str
    attempt: int
    error: ErrorInfo


class StepFailed(_Op, frozen=True, tag="step_failed"):
    step_id: str
    attempt: int
    error: ErrorInfo
    at: dt.datetime


class HookCreated(_Op, frozen=True, tag="hook_created"):
    """A new active hook; a disposed token may be taken again (the row is replaced)."""

    token: str
    run_id: str
    correlation_id: str
    at: dt.datetime
    metadata: Raw | None = None


class HookDisposed(_Op, frozen=True, tag="hook_disposed"):
    token: str
    at: dt.datetime


ProjectionOp = (RunStarted | RunFinished | StepStarted | StepCompleted | StepRetrying
                | StepFailed | HookCreated | HookDisposed)


def project(record: EventRecord) -> ProjectionOp | None:
    """The projection change of one event (None: the event changes no table)."""
    event, run_id, at = record.event, record.run_id, record.created_at
    match event:
        case ev.StepStarted(correlation_id=cid, step_name=name, attempt=attempt, input=inp):
            return StepStarted(step_id_for(run_id, cid), run_id, cid, name, attempt, inp, at)
        case ev.StepCompleted(correlation_id=cid, attempt=attempt, output=out):
            return StepCompleted(step_id_for(run_id, cid), attempt, out, at)
        case ev.StepRetrying(correlation_id=cid, attempt=attempt, error=error):
            return StepRetrying(step_id_for(run_id, cid), attempt, error)
        case ev.StepFailed(correlation_id=cid, attempt=attempt, error=error):
            return StepFailed(step_id_for(run_id, cid), attempt, error, at)
        case ev.HookCreated(correlation_id=cid, token=token, metadata=metadata):
            return HookCreated(token, run_id, cid, at,
                               None if metadata == ev.NO_METADATA else metadata)
        case ev.HookDisposed(token=token):
            return HookDisposed(token, at)
        case ev.RunStarted():
            return RunStarted(run_id, at)
        case ev.RunCompleted() | ev.RunFailed() | ev.RunCancelled() | ev.RunContinued():
            outcome = ev.run_outcome(event)
            assert outcome is not None
            status, output, failure = outcome
            return RunFinished(run_id, status, at, output=output, error=failure)
    return None


def check_fence(run_id: str, last_seq: int, records: list[EventRecord]) -> None:
    """Refuse an append that does not continue the log right after `last_seq`."""
    for i, rec in enumerate(records):
        if rec.seq != last_seq + 1 + i:
            if rec.seq <= last_seq + i:
                raise LeaseLostError(f"run {run_id}: event seq {rec.seq} already recorded")
            raise LeaseLostError(f"run {run_id}: event seq {rec.seq} does not follow "
                                 f"{last_seq + i} (an earlier append was lost)")


class AppendPlan(msgspec.Struct, frozen=True, gc=False):
    """Everything one append changes besides inserting its events."""

    ops: list[ProjectionOp]
    #: the run ended: remove its job and inbox, dispose its active hooks at `finished_at`
    finished_at: dt.datetime | None
    #: tokens of the hooks this append creates (a token held by a live hook conflicts)
    new_hook_tokens: list[str]

    @property
    def finishes(self) -> bool:
        return self.finished_at is not None


def plan_append(records: list[EventRecord]) -> AppendPlan:
    ops: list[ProjectionOp] = []
    finished_at: dt.datetime | None = None
    tokens: list[str] = []
    for rec in records:
        op = project(rec)
        if op is not None:
            ops.append(op)
        if isinstance(rec.event, ev.TERMINAL_EVENTS):
            finished_at = rec.created_at
        elif isinstance(rec.event, ev.HookCreated):
            tokens.append(rec.event.token)
    return AppendPlan(ops, finished_at, tokens)


def step_completions(ops: list[ProjectionOp]) -> dict[int, int]:
    """For each step start in `ops` whose completion follows it in `ops` with no other
    op of that step between them, the completion's index, by the start's index: such a
    step can be written as one row inserted completed."""
    last: dict[str, int] = {}  # step id -> index of its latest op so far
    pairs: dict[int, int] = {}
    for j, op in enumerate(ops):
        if type(op) is StepCompleted:
            i = last.get(op.step_id)
            if i is not None and type(ops[i]) is StepStarted:
                pairs[i] = j
            last[op.step_id] = j
        elif isinstance(op, StepStarted | StepRetrying | StepFailed):
            last[op.step_id] = j
    return pairs


def with_completions(ops: list[ProjectionOp]
                     ) -> Iterator[tuple[ProjectionOp, StepCompleted | None]]:
    """`ops` in order, each with None, except that a step start paired with its
    completion (`step_completions`) comes with that completion, which is not given on
    its own: what a world applies as one change of the step's record."""
    done_by = step_completions(ops)
    with_start = set(done_by.values())
    for i, op in enumerate(ops):
        if i in with_start:
            continue  # given with its start
        done = done_by.get(i)
        if done is None:
            yield op, None
        else:
            completed = ops[done]
            assert type(op) is StepStarted and type(completed) is StepCompleted
            yield op, completed


def completions_after_starts(ops: list[ProjectionOp]) -> list[ProjectionOp]:
    """`ops` with each completion of `step_completions` moved up to right after its
    step's start (ops of other steps and of the run keep their order; a completion only
    moves up, so it stays before the run's end). Parallel steps whose starts share an
    append come out as start-completion pairs, which a world writes as single rows."""
    if len(ops) < 3:  # nothing to move (the usual merge: one step's start, completion)
        return ops
    pairs = step_completions(ops)
    if all(j == i + 1 for i, j in pairs.items()):
        return ops
    moved = set(pairs.values())
    out: list[ProjectionOp] = []
    for i, op in enumerate(ops):
        if i in moved:
            continue
        out.append(op)
        j = pairs.get(i)
        if j is not None:
            out.append(ops[j])
    return out


#: the run's counter of each step status kept on the run row (pending: the rest)
STEP_COUNTERS = {"completed": "steps_completed", "failed": "steps_failed",
                 "running": "steps_running"}


def step_count_changes(old_status: str | None, new_status: str) -> dict[str, int]:
    """How a step moving from `old_status` (None: the step is new) to `new_status`
    changes its run's counters: `steps_total` counts each step once, whatever its
    attempts; a retried step leaves `steps_running` and comes back to it."""
    changes: dict[str, int] = {}
    if old_status is None:
        changes["steps_total"] = 1
    elif old_status == new_status:
        return changes
    if old_status in STEP_COUNTERS:
        changes[STEP_COUNTERS[old_status]] = -1
    if new_status in STEP_COUNTERS:
        changes[STEP_COUNTERS[new_status]] = 1
    return changes
