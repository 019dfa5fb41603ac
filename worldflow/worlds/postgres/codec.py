"""Values between Python and the Postgres world's rows and batch messages, and the
decoders that turn rows into the records core reads (runs, steps, hooks): a row
changed behind worldflow's back becomes a `CorruptRecordError` naming its run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from worldflow.core.events import ErrorInfo, EventRecord, decode_stored_event
from worldflow.core.records import (
    HookRecord,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    corrupt_run,
)
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "BAD_ROW",
    "corrupt_row",
    "decode_error",
    "decode_event_row",
    "decode_hook",
    "decode_raw",
    "decode_run",
    "decode_run_or_placeholder",
    "decode_step",
    "decode_tags",
]

#: what decoding a row that was changed behind worldflow's back can raise
BAD_ROW = (ValueError, TypeError, AttributeError, msgspec.DecodeError,
           msgspec.ValidationError)


def corrupt_row(table: str, row_id: object, run_id: object, exc: Exception
                ) -> CorruptRecordError:
    return CorruptRecordError(f"run {run_id}: its row {row_id!s:.200} in {table} cannot be "
                              f"decoded: {type(exc).__name__}: {exc}", str(run_id))

_error_decoder = msgspec.json.Decoder(ErrorInfo)


def decode_error(text: str | None) -> ErrorInfo | None:
    return None if text is None else _error_decoder.decode(text)


def decode_event_row(run_id: str, row: asyncpg.Record) -> EventRecord:
    return EventRecord(run_id, row[0], decode_stored_event(run_id, row[0], row[1]), row[2])


_tags_decoder = msgspec.json.Decoder(dict[str, str])


def decode_tags(text: str | None) -> dict[str, str]:
    """A run's tags as stored (a JSON object, or NULL for none)."""
    return {} if text is None else _tags_decoder.decode(text)


def decode_raw(text: str | None) -> Raw | None:
    """A stored JSON value (read as text) as msgspec Raw, byte for byte."""
    return None if text is None else Raw(text.encode())


def decode_run(row: asyncpg.Record) -> RunRecord:
    """A run; `CorruptRecordError` naming it if its row cannot be decoded."""
    try:
        return RunRecord(row[0], row[1], RunStatus(row[2]), Raw(row[3].encode()),
                         decode_raw(row[4]), decode_error(row[5]), row[6], row[7], row[8], row[9],
                         row[10], row[11],
                         tags=decode_tags(row[12]),
                         steps_total=row[13][0], steps_completed=row[13][1],
                         steps_failed=row[13][2], steps_running=row[13][3])
    except BAD_ROW as exc:
        raise corrupt_row("workflow_runs", row[0], row[0], exc) from None


def decode_run_or_placeholder(row: asyncpg.Record) -> RunRecord:
    """For listings: a corrupt row becomes a placeholder, so it hides no other run."""
    try:
        return decode_run(row)
    except CorruptRecordError as exc:
        return corrupt_run(row[0], row[1], row[6], str(exc))


def decode_step(r: asyncpg.Record) -> StepRecord:
    """A step; `CorruptRecordError` naming it if its row cannot be decoded."""
    try:
        return StepRecord(r[0], r[1], r[2], r[3], StepStatus(r[4]), r[5], decode_raw(r[6]),
                          decode_raw(r[7]), decode_error(r[8]), r[9], r[10])
    except BAD_ROW as exc:
        raise corrupt_row("workflow_steps", r[0], r[1], exc) from None


def decode_hook(row: asyncpg.Record) -> HookRecord:
    """A hook row as a record."""
    return HookRecord(row[0], row[1], row[2], row[3], row[4], row[5], decode_raw(row[6]))
