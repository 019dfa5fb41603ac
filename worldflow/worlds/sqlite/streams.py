"""Writes of stream chunks, as a plain sqlite3 function run in the writer's transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worldflow.errors import RunNotFoundError
from worldflow.worlds.sqlite.codec import encode_json, encode_time

if TYPE_CHECKING:
    import datetime as dt
    import sqlite3
    from collections.abc import Sequence

    from msgspec import Raw

__all__ = ["write_stream"]

SELECT_RUN_EXISTS = "SELECT 1 FROM workflow_runs WHERE id = ?"
SELECT_HEAD = ("SELECT length FROM workflow_stream_heads "
               "WHERE workflow_run_id = ? AND name = ?")
INSERT_CHUNK = ("INSERT INTO workflow_streams (workflow_run_id, name, idx, data, created_at) "
                "VALUES (?, ?, ?, ?, ?)")
UPSERT_HEAD = ("INSERT INTO workflow_stream_heads (workflow_run_id, name, length, closed) "
               "VALUES (?, ?, ?, ?) ON CONFLICT (workflow_run_id, name) DO UPDATE "
               "SET length = excluded.length, closed = max(closed, excluded.closed)")


def write_stream(conn: sqlite3.Connection, run_id: str, name: str,
                 chunks: Sequence[tuple[int, Raw]], close: bool, now: dt.datetime) -> None:
    if conn.execute(SELECT_RUN_EXISTS, (run_id,)).fetchone() is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    head = conn.execute(SELECT_HEAD, (run_id, name)).fetchone()
    length = 0 if head is None else head[0]
    at = encode_time(now)
    rows = []
    for index, data in chunks:
        # an index already stored is kept as it was: a retried writer never duplicates
        if index == length:
            rows.append((run_id, name, index, encode_json(data), at))
            length += 1
        elif index > length:
            raise ValueError(f"stream {name!r}: chunk {index} written before chunk {length}")
    conn.executemany(INSERT_CHUNK, rows)
    conn.execute(UPSERT_HEAD, (run_id, name, length, int(close)))
