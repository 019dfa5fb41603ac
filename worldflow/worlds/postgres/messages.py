"""The Postgres world's internal messages, typed: group-commit writes sent to the server
function `worldflow_apply` (functions.sql), its outcomes, and the NOTIFY payloads that
carry wake-ups between processes. All are msgspec Structs, encoded and decoded by the
encoders and decoders built once below.

A batch goes to the server in two parts (`encode_batch`): its skeleton, JSON the server
parses once as `jsonb` (ids, names, sequence numbers, times: what it looks things up
by), and the blobs, a `text[]` of the stored JSON values (event payloads, inputs,
outputs, errors, hook metadata) that the skeleton points at by index. A blob is JSON
parsed only to be validated as it is stored, byte for byte; it is never taken apart, so
the server parses each byte once instead of once per field it reads (the `json` type
has no index: every `->` parses the whole value again).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

import msgspec
from msgspec import Raw

from worldflow.worlds.projection import (
    HookCreated,
    HookDisposed,
    ProjectionOp,
    RunFinished,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)

if TYPE_CHECKING:
    from worldflow.core.events import ErrorInfo

__all__ = [
    "AppendWrite",
    "ApplyOutcome",
    "CreateRunWrite",
    "EventRow",
    "InboxChanged",
    "Notice",
    "RunEnded",
    "SlotReleased",
    "StreamChanged",
    "WorkAvailable",
    "Write",
    "decode_notice",
    "decode_outcomes",
    "encode_batch",
    "encode_notice",
    "error_json",
]


# -- group-commit writes ---------------------------------------------------------------
class CreateRunWrite(msgspec.Struct, frozen=True, gc=False, tag="create_run"):
    """A run, its run_created event and its queue job (leased to `lease_owner`)."""

    run_id: str
    workflow_name: str
    input: Raw
    created_at: dt.datetime
    queue: str
    dedup_key: str | None
    job_prefix: str
    payload: Raw  # the run_created event, stored as is (JSON embedded, not a string)
    lease_owner: str | None
    now: dt.datetime
    lease_expires_at: dt.datetime | None
    parent_run_id: str | None = None
    #: searchable tags: stored on the run and, one row each, in workflow_run_tags
    tags: dict[str, str] | None = None
    #: the run is created started (`NewRun.started`): its run_started event, stored as is
    started: Raw | None = None


class EventRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One event to insert (a compact array: batches carry many)."""

    seq: int
    event_type: str
    correlation_id: str | None
    payload: Raw  # the event, stored as is (JSON embedded, not a string)
    created_at: dt.datetime


class AppendWrite(msgspec.Struct, frozen=True, gc=False, tag="append"):
    """Events of one run with their projection ops; `finished_at`: the run ended (its
    job and inbox go, its active hooks are disposed)."""

    run_id: str
    events: list[EventRow]
    ops: list[ProjectionOp]
    inbox_ids: list[int]
    finished_at: dt.datetime | None


Write = CreateRunWrite | AppendWrite


class ApplyOutcome(msgspec.Struct, frozen=True, gc=False):
    """What `worldflow_apply` reports for one write."""

    ok: bool
    created: bool = False
    run_id: str | None = None
    error: Literal["lease_lost", "hook_conflict", "not_found"] | None = None
    message: str | None = None


# -- the skeleton of a batch: blob fields hold 1-based indexes into the blobs ----------
class _CreateRunRow(msgspec.Struct, frozen=True, gc=False, tag="create_run"):
    run_id: str
    workflow_name: str
    input: int
    created_at: dt.datetime
    queue: str
    dedup_key: str | None
    job_prefix: str
    payload: int
    lease_owner: str | None
    now: dt.datetime
    lease_expires_at: dt.datetime | None
    parent_run_id: str | None
    #: the run's tags as a JSON object (kept as given, key order too); None: no tags
    tags: int | None = None
    #: the run_started event of a run created started; None: created pending
    started: int | None = None


class _EventRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    seq: int
    event_type: str
    correlation_id: str | None
    payload: int
    created_at: dt.datetime


class _OpRow(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A projection op the server applies, to a run or a hook (`type` says which);
    absent fields are left out."""

    type: str
    run_id: str | None = None
    correlation_id: str | None = None
    status: str | None = None
    token: str | None = None
    at: dt.datetime | None = None
    output: int | None = None
    error: int | None = None
    metadata: int | None = None


class _AppendRow(msgspec.Struct, frozen=True, gc=False, tag="append"):
    run_id: str
    events: list[_EventRow]
    ops: list[_OpRow]
    inbox_ids: list[int]
    finished_at: dt.datetime | None


_skeleton_encoder = msgspec.json.Encoder()
_error_encoder = msgspec.json.Encoder()
_outcomes_decoder = msgspec.json.Decoder(list[ApplyOutcome])


def error_json(error: ErrorInfo) -> bytes:
    """An error as the runs table stores it (JSON)."""
    return _error_encoder.encode(error)


class _Blobs:
    __slots__ = ("texts",)

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, value: Raw) -> int:
        self.texts.append(str(value, "utf-8"))
        return len(self.texts)

    def maybe(self, value: Raw | None) -> int | None:
        return None if value is None else self.add(value)

    def error(self, error: ErrorInfo | None) -> int | None:
        return None if error is None else self.add(Raw(error_json(error)))


#: ops the server has nothing to do for: a step is its events (the workflow_steps view)
_STEP_OPS = (StepStarted, StepCompleted, StepRetrying, StepFailed)


def _op_row(op: ProjectionOp, blobs: _Blobs) -> _OpRow:
    if isinstance(op, RunStarted):
        return _OpRow("run_started", run_id=op.run_id, at=op.at)
    if isinstance(op, RunFinished):
        return _OpRow("run_finished", run_id=op.run_id, status=op.status, at=op.at,
                      output=blobs.maybe(op.output), error=blobs.error(op.error))
    if isinstance(op, HookCreated):
        return _OpRow("hook_created", token=op.token, run_id=op.run_id,
                      correlation_id=op.correlation_id, at=op.at,
                      metadata=blobs.maybe(op.metadata))
    if isinstance(op, HookDisposed):
        return _OpRow("hook_disposed", token=op.token, at=op.at)
    raise TypeError(f"unknown projection op {op!r}")  # pragma: no cover


def _row(write: Write, blobs: _Blobs) -> _CreateRunRow | _AppendRow:
    if isinstance(write, AppendWrite):
        return _AppendRow(
            write.run_id,
            [_EventRow(e.seq, e.event_type, e.correlation_id, blobs.add(e.payload),
                       e.created_at) for e in write.events],
            [_op_row(op, blobs) for op in write.ops if not isinstance(op, _STEP_OPS)],
            write.inbox_ids, write.finished_at)
    return _CreateRunRow(
        write.run_id, write.workflow_name, blobs.add(write.input), write.created_at,
        write.queue, write.dedup_key, write.job_prefix, blobs.add(write.payload),
        write.lease_owner, write.now, write.lease_expires_at, write.parent_run_id,
        None if not write.tags else blobs.add(Raw(_skeleton_encoder.encode(write.tags))),
        None if write.started is None else blobs.add(write.started))


def encode_batch(writes: list[Write]) -> tuple[str, list[str]]:
    """The skeleton (JSON text, for a `jsonb` parameter) and the blobs of a batch."""
    blobs = _Blobs()
    rows = [_row(write, blobs) for write in writes]
    return _skeleton_encoder.encode(rows).decode(), blobs.texts


def encode_write(write: Write) -> bytes:
    """One write's skeleton alone (to find a write the server cannot take)."""
    return _skeleton_encoder.encode(_row(write, _Blobs()))


def decode_outcomes(text: str) -> list[ApplyOutcome]:
    return _outcomes_decoder.decode(text)


# -- NOTIFY payloads -------------------------------------------------------------------
class _Notice(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class WorkAvailable(_Notice, frozen=True, tag="work"):
    """A job became claimable: workers should claim."""


class InboxChanged(_Notice, frozen=True, tag="inbox"):
    """Outside input (a hook payload, a cancel) arrived for the run."""

    run_id: str


class RunEnded(_Notice, frozen=True, tag="run_ended"):
    run_id: str


class StreamChanged(_Notice, frozen=True, tag="stream"):
    run_id: str
    name: str


class SlotReleased(_Notice, frozen=True, tag="slot"):
    queue: str


Notice = WorkAvailable | InboxChanged | RunEnded | StreamChanged | SlotReleased

_notice_encoder = msgspec.json.Encoder()
_notice_decoder = msgspec.json.Decoder(Notice)


def encode_notice(notice: Notice) -> str:
    return _notice_encoder.encode(notice).decode()


def decode_notice(payload: str) -> Notice:
    notice: Notice = _notice_decoder.decode(payload)
    return notice
