"""Opaque cursors for run listings: (created_at, run_id) of the last row seen."""

from __future__ import annotations

import base64
import datetime as dt

import msgspec

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(created_at: dt.datetime, run_id: str) -> str:
    raw = msgspec.json.encode([created_at, run_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, run_id = msgspec.json.decode(base64.urlsafe_b64decode(padded),
                                                 type=tuple[dt.datetime, str])
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValueError(f"invalid cursor: {cursor!r}") from exc
    return created_at, run_id
