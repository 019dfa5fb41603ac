"""Values between Python and the Postgres world's rows and batch messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from worldflow.core.events import ErrorInfo, EventRecord, decode_stored_event

if TYPE_CHECKING:
    import asyncpg

__all__ = ["decode_error", "decode_event_row"]

_error_decoder = msgspec.json.Decoder(ErrorInfo)


def decode_error(text: str | None) -> ErrorInfo | None:
    return None if text is None else _error_decoder.decode(text)


def decode_event_row(run_id: str, row: asyncpg.Record) -> EventRecord:
    return EventRecord(run_id, row[0], decode_stored_event(run_id, row[0], row[1]), row[2])
