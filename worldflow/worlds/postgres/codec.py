"""Values between Python and the Postgres world's rows and batch messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from worldflow.core.events import ErrorInfo, EventRecord, decode_stored_event
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    import asyncpg

__all__ = ["BAD_ROW", "corrupt_row", "decode_error", "decode_event_row", "decode_tags"]

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
