"""Values between Python and the Postgres world's rows and batch messages."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.core.events import ErrorInfo, EventRecord, decode_stored_event

if TYPE_CHECKING:
    import asyncpg

__all__ = ["decode_error", "decode_event_row", "op_args"]

_error_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorInfo)


def op_args(name: str, args: tuple[Any, ...]) -> list[Any]:
    """A projection op's args as JSON values for `worldflow_apply` (times as ISO text,
    JSON values and errors as JSON text)."""
    out: list[Any] = []
    for value in args:
        if isinstance(value, dt.datetime):
            out.append(value.isoformat())
        elif isinstance(value, bytes | bytearray | memoryview):
            out.append(bytes(value).decode())
        elif isinstance(value, ErrorInfo):
            out.append(_error_encoder.encode(value).decode())
        else:
            out.append(value)
    return out


def decode_error(text: str | None) -> ErrorInfo | None:
    return None if text is None else _error_decoder.decode(text)


def decode_event_row(run_id: str, row: asyncpg.Record) -> EventRecord:
    return EventRecord(run_id, row[0], decode_stored_event(run_id, row[0], row[1]), row[2])
