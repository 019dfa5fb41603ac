"""How values are stored in SQLite: timestamps as sortable text, JSON as text.

Timestamps are UTC ISO-8601 text in one fixed shape, always with microseconds
(``2026-11-25T04:58:49.123456+00:00``), so that text order is time order (indexes and
cursors compare them as text) and reading one back gives exactly the instant written.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from worldflow.core.events import ErrorInfo, EventRecord, decode_stored_event
from worldflow.core.records import (
    HookRecord,
    InboxRecord,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    StreamChunk,
    corrupt_run,
)
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CHUNK_COLUMNS",
    "EVENT_COLUMNS",
    "HOOK_COLUMNS",
    "INBOX_COLUMNS",
    "RUN_COLUMNS",
    "STEP_COLUMNS",
    "decode_chunk",
    "decode_event_row",
    "decode_hook",
    "decode_inbox",
    "decode_run",
    "decode_run_or_placeholder",
    "decode_step",
    "decode_tags",
    "decode_time",
    "encode_error",
    "encode_json",
    "encode_tags",
    "encode_time",
    "numbered",
]

_UTC = dt.UTC
#: the names sqlite3 binds numbered placeholders (?1, ?2, ...) by
_NUMBERS = tuple(str(i) for i in range(1, 33))
_ZERO = dt.timedelta(0)
_error_decoder = msgspec.json.Decoder(ErrorInfo)
_error_encoder = msgspec.json.Encoder()
_tags_decoder = msgspec.json.Decoder(dict[str, str])


def numbered(*values: object) -> dict[str, object]:
    """The parameters of a statement whose placeholders are numbered (`?1`, `?2`: a
    value may be used more than once), as sqlite3 binds those: by name, from a mapping
    (a sequence for them is deprecated since Python 3.12 and refused from 3.14)."""
    return dict(zip(_NUMBERS, values, strict=False))


def encode_time(value: dt.datetime) -> str:
    # a naive datetime is taken as UTC, not local time: a local reading would move it
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    elif value.utcoffset() != _ZERO:
        value = value.astimezone(_UTC)
    return value.isoformat(timespec="microseconds")


def decode_time(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def encode_json(value: bytes | Raw | None) -> str | None:
    # TEXT rather than BLOB, so that sqlite's json functions and a human can read it
    return None if value is None else bytes(value).decode()


def _raw(text: str | None) -> Raw | None:
    return None if text is None else Raw(text.encode())


def encode_error(error: ErrorInfo | None) -> str | None:
    return None if error is None else _error_encoder.encode(error).decode()


def encode_tags(tags: dict[str, str]) -> str | None:
    return _error_encoder.encode(tags).decode() if tags else None


def decode_tags(text: str | None) -> dict[str, str]:
    return {} if text is None else _tags_decoder.decode(text)


def _error(text: str | None) -> ErrorInfo | None:
    return None if text is None else _error_decoder.decode(text)


# Column lists are shared by the queries and the decoders below, so they cannot drift.
RUN_COLUMNS = ("id, workflow_name, status, input, output, error, created_at, started_at, "
               "completed_at, updated_at, queue, parent_run_id, tags, steps_total, "
               "steps_completed, steps_failed, steps_running")
STEP_COLUMNS = ("id, workflow_run_id, correlation_id, step_name, status, attempt, input, "
                "output, error, started_at, completed_at")
HOOK_COLUMNS = ("token, workflow_run_id, correlation_id, status, created_at, disposed_at, "
                "metadata")
INBOX_COLUMNS = "id, workflow_run_id, kind, token, payload, created_at"
EVENT_COLUMNS = "workflow_run_id, seq, payload, created_at"
CHUNK_COLUMNS = "workflow_run_id, name, idx, data, created_at"


#: what decoding a row that was changed behind worldflow's back can raise
_BAD_ROW = (ValueError, TypeError, AttributeError, msgspec.DecodeError,
            msgspec.ValidationError)


def _corrupt(table: str, row_id: Any, run_id: Any, exc: Exception) -> CorruptRecordError:
    return CorruptRecordError(f"run {run_id}: its row {row_id!s:.200} in {table} cannot be "
                              f"decoded: {type(exc).__name__}: {exc}", str(run_id))


def decode_run(row: Sequence[Any]) -> RunRecord:
    """A run; `CorruptRecordError` naming it if its row cannot be decoded."""
    try:
        return RunRecord(row[0], row[1], RunStatus(row[2]), Raw(row[3].encode()),
                         _raw(row[4]), _error(row[5]), _time(row[6]), decode_time(row[7]),
                         decode_time(row[8]), _time(row[9]), row[10],
                         row[11], tags=decode_tags(row[12]), steps_total=row[13],
                         steps_completed=row[14], steps_failed=row[15],
                         steps_running=row[16])
    except _BAD_ROW as exc:
        raise _corrupt("workflow_runs", row[0], row[0], exc) from None


def decode_run_or_placeholder(row: Sequence[Any]) -> RunRecord:
    """For listings: a corrupt row becomes a placeholder, so it hides no other run."""
    try:
        return decode_run(row)
    except CorruptRecordError as exc:
        try:
            created_at: dt.datetime | None = _time(row[6])
        except _BAD_ROW:
            created_at = None
        return corrupt_run(row[0], row[1], created_at, str(exc))


def decode_step(row: Sequence[Any]) -> StepRecord:
    try:
        return StepRecord(row[0], row[1], row[2], row[3], StepStatus(row[4]), row[5],
                          _raw(row[6]), _raw(row[7]), _error(row[8]), decode_time(row[9]),
                          decode_time(row[10]))
    except _BAD_ROW as exc:
        raise _corrupt("workflow_steps", row[0], row[1], exc) from None


def decode_hook(row: Sequence[Any]) -> HookRecord:
    try:
        return HookRecord(row[0], row[1], row[2], row[3], _time(row[4]), decode_time(row[5]),
                          _raw(row[6]))
    except _BAD_ROW as exc:
        raise _corrupt("workflow_hooks", row[0], row[1], exc) from None


def decode_inbox(row: Sequence[Any]) -> InboxRecord:
    return InboxRecord(row[0], row[1], row[2], row[3], _raw(row[4]), _time(row[5]))


def decode_event_row(row: Sequence[Any]) -> EventRecord:
    return EventRecord(row[0], row[1], decode_stored_event(row[0], row[1], row[2]),
                       _time(row[3]))


def decode_chunk(row: Sequence[Any]) -> StreamChunk:
    return StreamChunk(row[0], row[1], row[2], Raw(row[3].encode()), _time(row[4]))
