"""The Postgres world's internal messages, typed: group-commit writes sent to the server
function `worldflow_apply` (functions.sql), its outcomes, and the NOTIFY payloads that
carry wake-ups between processes. All are msgspec Structs, encoded and decoded by the
encoders and decoders built once below."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec
from msgspec import Raw

from worldflow.worlds.projection import ProjectionOp

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
    "encode_notice",
    "encode_writes",
]


# -- group-commit writes ---------------------------------------------------------------
class CreateRunWrite(msgspec.Struct, frozen=True, tag="create_run"):
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


class EventRow(msgspec.Struct, frozen=True, array_like=True):
    """One event to insert (a compact array: batches carry many)."""

    seq: int
    event_type: str
    correlation_id: str | None
    payload: Raw  # the event, stored as is (JSON embedded, not a string)
    created_at: dt.datetime


class AppendWrite(msgspec.Struct, frozen=True, tag="append"):
    """Events of one run with their projection ops; `finished_at`: the run ended (its
    job and inbox go, its active hooks are disposed)."""

    run_id: str
    events: list[EventRow]
    ops: list[ProjectionOp]
    inbox_ids: list[int]
    finished_at: dt.datetime | None


Write = CreateRunWrite | AppendWrite


class ApplyOutcome(msgspec.Struct, frozen=True):
    """What `worldflow_apply` reports for one write."""

    ok: bool
    created: bool = False
    run_id: str | None = None
    error: Literal["lease_lost", "hook_conflict", "not_found"] | None = None
    message: str | None = None


_write_encoder = msgspec.json.Encoder()
_outcomes_decoder = msgspec.json.Decoder(list[ApplyOutcome])


def encode_writes(writes: list[Write]) -> str:
    return _write_encoder.encode(writes).decode()


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
