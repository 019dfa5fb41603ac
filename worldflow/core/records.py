"""Rows a world stores and returns: runs, steps, hooks, inbox messages, stream chunks."""

from __future__ import annotations

import datetime as dt
import enum

import msgspec
from msgspec import Raw

from worldflow.core.events import ErrorInfo, EventRecord, RunCreated, RunStarted

__all__ = [
    "HookRecord",
    "InboxRecord",
    "NewRun",
    "Page",
    "RunRecord",
    "RunStatus",
    "ScheduleRecord",
    "StepRecord",
    "StepStatus",
    "StreamChunk",
    "corrupt_run",
]


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: ended by `continue_as_new`: the next run of the chain goes on (its id: `output`)
    CONTINUED = "continued"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                       RunStatus.CONTINUED})


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class NewRun(msgspec.Struct, frozen=True, gc=False):
    """What `World.create_run` needs to create a run atomically with its first event."""

    run_id: str
    workflow_name: str
    input: Raw
    created_at: dt.datetime
    queue: str = "default"
    dedup_key: str | None = None
    #: the run whose workflow started this one as a child (None: a top-level run)
    parent_run_id: str | None = None
    #: stored in `run_created`: the trace context the run's spans continue (telemetry)
    trace_context: dict[str, str] = {}
    #: searchable string tags (checked by `worldflow.core.listing.check_tags`)
    tags: dict[str, str] = {}
    #: the creating process runs it at once (it takes the lease, on the default queue):
    #: the run is stored running, its log holding `run_started` (seq 1, at
    #: `created_at`) after `run_created`, so that its start costs no write of its own
    started: bool = False


class RunRecord(msgspec.Struct, frozen=True, gc=False):
    """A run as stored. In a listing, a row that cannot be decoded comes back as a
    placeholder whose `corrupt` says why (its other fields are what could be read;
    `status` is `failed`); `World.get_run` raises `CorruptRecordError` for it."""

    run_id: str
    workflow_name: str
    status: RunStatus
    input: Raw
    output: Raw | None
    error: ErrorInfo | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    updated_at: dt.datetime
    queue: str = "default"
    parent_run_id: str | None = None
    corrupt: str | None = None
    #: the tags given to `start(tags=...)`; they never change
    tags: dict[str, str] = {}
    #: the run's steps (each counted once, whatever its attempts), and how many are
    #: completed, failed (for good) and running now; the rest are pending a retry.
    #: Read with the run (kept as events are stored, or counted from the step events
    #: as the run is read), so a listing needs no `list_steps`.
    steps_total: int = 0
    steps_completed: int = 0
    steps_failed: int = 0
    steps_running: int = 0


def created_run(run: NewRun) -> RunRecord:
    """The record of a run `World.create_run` has just created from `run`."""
    status = RunStatus.RUNNING if run.started else RunStatus.PENDING
    return RunRecord(run.run_id, run.workflow_name, status, run.input, None, None,
                     run.created_at, run.created_at if run.started else None, None,
                     run.created_at, run.queue, run.parent_run_id, tags=dict(run.tags))


def created_events(run: NewRun) -> list[EventRecord]:
    """The log of a run `World.create_run` has just created from `run`: `run_created`
    (seq 0), and `run_started` (seq 1) if it is created started, both at `created_at`."""
    events = [EventRecord(run.run_id, 0, RunCreated(run.workflow_name, run.input,
                                                    trace_context=run.trace_context),
                          run.created_at)]
    if run.started:
        events.append(EventRecord(run.run_id, 1, RunStarted(), run.created_at))
    return events


def corrupt_run(run_id: str, workflow_name: object, created_at: dt.datetime | None,
                reason: str) -> RunRecord:
    """The placeholder of a run whose row cannot be decoded (see `RunRecord`)."""
    when = created_at or dt.datetime.min.replace(tzinfo=dt.UTC)
    return RunRecord(str(run_id), workflow_name if isinstance(workflow_name, str) else "?",
                     RunStatus.FAILED, Raw(b"null"), None,
                     ErrorInfo("CorruptRecordError", reason), when, None, None, when,
                     corrupt=reason)


class StepRecord(msgspec.Struct, frozen=True, gc=False):
    step_id: str
    run_id: str
    correlation_id: str
    step_name: str
    status: StepStatus
    attempt: int
    input: Raw | None
    output: Raw | None
    error: ErrorInfo | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None


class HookRecord(msgspec.Struct, frozen=True, gc=False):
    token: str
    run_id: str
    correlation_id: str
    status: str  # "active" | "disposed"
    created_at: dt.datetime
    disposed_at: dt.datetime | None = None
    metadata: Raw | None = None


class InboxRecord(msgspec.Struct, frozen=True, gc=False):
    """Input from outside a run, waiting for the run's actor to take it into its log.

    `kind` is ``"hook"`` (payload for hook `token`), ``"cancel"``, or ``"message"``
    (a message sent with `send`; `token` holds its topic).
    """

    id: int
    run_id: str
    kind: str
    token: str | None
    payload: Raw | None
    created_at: dt.datetime


class StreamChunk(msgspec.Struct, frozen=True, gc=False):
    run_id: str
    name: str
    index: int
    data: Raw  # JSON; bytes are stored as {"$bytes": base64}
    created_at: dt.datetime


class Page(msgspec.Struct, frozen=True):
    """One page of a listing; pass `next_cursor` back to get the next (None: last page)."""

    items: list[RunRecord]
    next_cursor: str | None


def step_id_for(run_id: str, correlation_id: str) -> str:
    """The id of a step: stable across its attempts, so usable as an idempotency key."""
    return f"{run_id}:{correlation_id}"


class ScheduleRecord(msgspec.Struct, frozen=True):
    """A cron schedule as stored: each tick of `cron` (in `timezone`) after
    `last_tick` starts one run of `workflow_name` with `input` (the encoded arguments).

    `last_tick` is the latest tick already started (or skipped by the catch-up mode);
    it only moves forward, by compare-and-set (`World.advance_schedule`), so that
    workers sharing the world never start a tick twice. `catchup` is ``"latest"``,
    ``"all"`` or ``"none"`` (what to do with ticks missed while no worker ran)."""

    schedule_id: str
    workflow_name: str
    cron: str
    timezone: str
    catchup: str
    input: Raw
    paused: bool
    last_tick: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
