"""Reads, as plain sqlite3 functions run in a read connection's thread.

WAL lets these run while the writer commits; a read that needs two statements to
agree runs them in one read transaction (one snapshot).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import msgspec

from worldflow.core.records import Page, StreamChunk
from worldflow.worlds.cursor import decode_cursor, encode_cursor
from worldflow.worlds.sqlite.codec import (
    CHUNK_COLUMNS,
    EVENT_COLUMNS,
    HOOK_COLUMNS,
    INBOX_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    decode_chunk,
    decode_event_row,
    decode_hook,
    decode_inbox,
    decode_run,
    decode_run_or_placeholder,
    decode_step,
    decode_time,
    encode_time,
    numbered,
)

if TYPE_CHECKING:
    import datetime as dt
    import sqlite3
    from collections.abc import Collection, Mapping

    from worldflow.core.events import EventRecord
    from worldflow.core.records import HookRecord, InboxRecord, RunRecord, StepRecord

__all__ = [
    "any_claimable",
    "get_hook",
    "get_run",
    "lease_owners",
    "list_events",
    "list_hooks",
    "list_runs",
    "list_steps",
    "list_streams",
    "next_wake_at",
    "read_inbox",
    "read_stream",
]

SELECT_RUN = "SELECT " + RUN_COLUMNS + " FROM workflow_runs WHERE id = ?"
SELECT_STEPS = ("SELECT " + STEP_COLUMNS + " FROM workflow_steps WHERE workflow_run_id = ? "
                "ORDER BY rowid")
SELECT_EVENTS = ("SELECT " + EVENT_COLUMNS + " FROM workflow_events "
                 "WHERE workflow_run_id = ? AND seq > ? ORDER BY seq LIMIT ?")
SELECT_INBOX = ("SELECT " + INBOX_COLUMNS + " FROM workflow_inbox WHERE workflow_run_id = ? "
                "ORDER BY id")
SELECT_HOOK = "SELECT " + HOOK_COLUMNS + " FROM workflow_hooks WHERE token = ?"
SELECT_HOOKS = "SELECT " + HOOK_COLUMNS + " FROM workflow_hooks ORDER BY rowid"
SELECT_RUN_HOOKS = ("SELECT " + HOOK_COLUMNS + " FROM workflow_hooks "
                    "WHERE workflow_run_id = ? ORDER BY rowid")
SELECT_STREAM_HEAD = ("SELECT closed FROM workflow_stream_heads "
                      "WHERE workflow_run_id = ? AND name = ?")
SELECT_CHUNKS = ("SELECT " + CHUNK_COLUMNS + " FROM workflow_streams "
                 "WHERE workflow_run_id = ? AND name = ? AND idx >= ? ORDER BY idx LIMIT ?")
SELECT_STREAMS = ("SELECT name, length, closed FROM workflow_stream_heads "
                  "WHERE workflow_run_id = ? ORDER BY name")
SELECT_LEASE_OWNERS = ("SELECT DISTINCT lease_owner FROM workflow_jobs "
                       "WHERE lease_owner IS NOT NULL ORDER BY lease_owner")
SELECT_NEXT_WAKE = (
    "SELECT min(at) FROM ("
    "SELECT min(available_at) AS at FROM workflow_jobs "
    "WHERE lease_owner IS NULL AND available_at IS NOT NULL "
    "UNION ALL SELECT min(lease_expires_at) FROM workflow_jobs WHERE lease_owner IS NOT NULL)")
SELECT_ANY_CLAIMABLE = (
    "SELECT EXISTS (SELECT 1 FROM workflow_jobs WHERE lease_owner IS NULL "
    "AND available_at <= ?1) OR EXISTS (SELECT 1 FROM workflow_jobs "
    "WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1)")

# the same, for a worker that takes only runs of some workflows (and any pending cancel)
SELECT_ANY_CLAIMABLE_OF = (
    "SELECT EXISTS (SELECT 1 FROM workflow_jobs WHERE lease_owner IS NULL "
    "AND available_at <= ?1 AND workflow_name IN (SELECT value FROM json_each(?2))) "
    "OR EXISTS (SELECT 1 FROM workflow_jobs WHERE cancel_pending = 1 AND backoff = 0 "
    "AND lease_owner IS NULL AND available_at <= ?1) "
    "OR EXISTS (SELECT 1 FROM workflow_jobs WHERE lease_owner IS NOT NULL "
    "AND lease_expires_at <= ?1 AND ((cancel_pending = 1 AND backoff = 0) "
    "OR workflow_name IN (SELECT value FROM json_each(?2))))")
# per name, so that min() is one index seek (workflow_jobs_ready_by_name)
SELECT_NEXT_READY_OF = ("SELECT min(available_at) FROM workflow_jobs WHERE workflow_name = ? "
                        "AND lease_owner IS NULL AND available_at IS NOT NULL")
SELECT_NEXT_OTHER_OF = (
    "SELECT min(at) FROM ("
    "SELECT min(available_at) AS at FROM workflow_jobs WHERE cancel_pending = 1 "
    "AND backoff = 0 AND lease_owner IS NULL AND available_at IS NOT NULL "
    "UNION ALL SELECT min(lease_expires_at) FROM workflow_jobs WHERE lease_owner IS NOT NULL "
    "AND ((cancel_pending = 1 AND backoff = 0) "
    "OR workflow_name IN (SELECT value FROM json_each(?1))))")


def _list_runs_query(status: bool, name: bool, after: bool, since: bool, *,
                     tagged: int) -> str:
    """The listing query of one filter combination (built once, at import; values stay
    parameters). `tagged`: 0 no tag filter, 1 one tag, 2 several. A tag filter walks
    the tags index (key, value, created_at, run id) of the first tag newest first, so a
    page stops after `limit` matches; further tags are checked per run."""
    if not tagged:
        table, prefix, order_at, order_id = "workflow_runs", "", "created_at", "id"
    else:
        table = "workflow_run_tags t JOIN workflow_runs r ON r.id = t.workflow_run_id"
        prefix, order_at, order_id = "r.", "t.created_at", "t.workflow_run_id"
    conditions = [sql for wanted, sql in (
        (tagged > 0, "t.key = :tag_key AND t.value = :tag_value"),
        (tagged > 1, "(SELECT count(*) FROM workflow_run_tags o JOIN json_each(:tags) j "
                     "ON o.key = j.key AND o.value = j.value "
                     "WHERE o.workflow_run_id = r.id) = :tag_count"),
        (status, prefix + "status = :status"),
        (name, prefix + "workflow_name = :name"),
        (after, f"({order_at}, {order_id}) < (:after_at, :after_id)"),
        (since, f"{order_at} >= :since")) if wanted]
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    columns = ", ".join(prefix + column.strip() for column in RUN_COLUMNS.split(","))
    return (f"SELECT {columns} FROM {table}{where} "
            f"ORDER BY {order_at} DESC, {order_id} DESC LIMIT :limit")


LIST_RUNS = {(*flags, tagged): _list_runs_query(*flags, tagged=tagged)
             for flags in itertools.product((False, True), repeat=4)
             for tagged in (0, 1, 2)}


def get_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(SELECT_RUN, (run_id,)).fetchone()
    return None if row is None else decode_run(row)


def list_runs(conn: sqlite3.Connection, status: str | None, workflow_name: str | None,
              limit: int, cursor: str | None, tags: Mapping[str, str] | None = None,
              since: dt.datetime | None = None) -> Page:
    after = decode_cursor(cursor) if cursor else None
    pairs = list(tags.items()) if tags else []
    query = LIST_RUNS[status is not None, workflow_name is not None, after is not None,
                      since is not None, min(len(pairs), 2)]
    params = {"status": None if status is None else str(status), "name": workflow_name,
              "after_at": None if after is None else encode_time(after[0]),
              "after_id": None if after is None else after[1], "limit": limit + 1,
              "since": None if since is None else encode_time(since),
              "tag_key": pairs[0][0] if pairs else None,
              "tag_value": pairs[0][1] if pairs else None,
              "tags": msgspec.json.encode(dict(pairs)).decode(), "tag_count": len(pairs)}
    items = [decode_run_or_placeholder(row)
             for row in conn.execute(query, params).fetchall()]
    more = len(items) > limit
    items = items[:limit]
    nxt = encode_cursor(items[-1].created_at, items[-1].run_id) if more and items else None
    return Page(items, nxt)


def list_steps(conn: sqlite3.Connection, run_id: str) -> list[StepRecord]:
    return [decode_step(row) for row in conn.execute(SELECT_STEPS, (run_id,)).fetchall()]


def list_events(conn: sqlite3.Connection, run_id: str, after_seq: int,
                limit: int | None) -> list[EventRecord]:
    rows = conn.execute(SELECT_EVENTS, (run_id, after_seq, -1 if limit is None else limit))
    return [decode_event_row(row) for row in rows.fetchall()]


def read_inbox(conn: sqlite3.Connection, run_id: str) -> list[InboxRecord]:
    return [decode_inbox(row) for row in conn.execute(SELECT_INBOX, (run_id,)).fetchall()]


def get_hook(conn: sqlite3.Connection, token: str) -> HookRecord | None:
    row = conn.execute(SELECT_HOOK, (token,)).fetchone()
    return None if row is None else decode_hook(row)


def list_hooks(conn: sqlite3.Connection, run_id: str | None) -> list[HookRecord]:
    rows = (conn.execute(SELECT_HOOKS) if run_id is None
            else conn.execute(SELECT_RUN_HOOKS, (run_id,)))
    return [decode_hook(row) for row in rows.fetchall()]


def read_stream(conn: sqlite3.Connection, run_id: str, name: str, start: int,
                limit: int) -> tuple[list[StreamChunk], bool]:
    # one snapshot: a reader told "closed" must also get the chunks written before it
    conn.execute("BEGIN")
    try:
        head = conn.execute(SELECT_STREAM_HEAD, (run_id, name)).fetchone()
        rows = conn.execute(SELECT_CHUNKS, (run_id, name, start, limit)).fetchall()
    finally:
        conn.execute("COMMIT")
    return [decode_chunk(row) for row in rows], bool(head and head[0])


def list_streams(conn: sqlite3.Connection, run_id: str) -> list[tuple[str, int, bool]]:
    return [(name, length, bool(closed))
            for name, length, closed in conn.execute(SELECT_STREAMS, (run_id,)).fetchall()]


def lease_owners(conn: sqlite3.Connection) -> list[str]:
    return [owner for (owner,) in conn.execute(SELECT_LEASE_OWNERS).fetchall()]


def next_wake_at(conn: sqlite3.Connection,
                 workflows: Collection[str] | None) -> dt.datetime | None:
    if workflows is None:
        return decode_time(conn.execute(SELECT_NEXT_WAKE).fetchone()[0])
    names = sorted(workflows)
    times = [conn.execute(SELECT_NEXT_READY_OF, (name,)).fetchone()[0] for name in names]
    times.append(conn.execute(SELECT_NEXT_OTHER_OF, numbered(_json_list(names))).fetchone()[0])
    return decode_time(min((t for t in times if t is not None), default=None))


def any_claimable(conn: sqlite3.Connection, now: dt.datetime,
                  workflows: Collection[str] | None) -> bool:
    """Whether a claim could lease anything: lets an idle poll skip the write lock."""
    if workflows is None:
        return bool(conn.execute(SELECT_ANY_CLAIMABLE, numbered(encode_time(now))).fetchone()[0])
    row = conn.execute(SELECT_ANY_CLAIMABLE_OF, numbered(encode_time(now),
                                                             _json_list(workflows)))
    return bool(row.fetchone()[0])


def _json_list(values: Collection[str]) -> str:
    return msgspec.json.encode(sorted(values)).decode()
