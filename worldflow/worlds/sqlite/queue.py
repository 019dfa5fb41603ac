"""Writes to the queue: run leases, input from outside a run, named queues' slots.

Plain sqlite3 functions run inside the writer's transaction. `BEGIN IMMEDIATE` holds
SQLite's one write lock across processes, so a claim's read-then-lease cannot race
another claim: two owners never hold one run.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec

from worldflow.errors import HookNotFoundError, RunFinishedError, RunNotFoundError
from worldflow.worlds.sqlite.codec import decode_time, encode_json, encode_time, numbered

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Collection, Sequence

    from msgspec import Raw

__all__ = [
    "acquire_slot",
    "claim_runs",
    "expire_leases",
    "release_run",
    "release_slot",
    "renew_leases",
    "renew_slots",
    "request_cancel",
    "resume_hook",
]

# Two index-ordered scans (never-leased jobs, expired leases) merged in Python: each
# uses its partial index, where one OR-ed query would scan the whole table.
SELECT_READY = ("SELECT available_at, created_at, run_id FROM workflow_jobs "
                "WHERE lease_owner IS NULL AND available_at <= ? "
                "ORDER BY available_at, created_at, run_id LIMIT ?")
SELECT_EXPIRED = ("SELECT coalesce(available_at, ?1), created_at, run_id FROM workflow_jobs "
                  "WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1 "
                  "ORDER BY coalesce(available_at, ?1), created_at, run_id LIMIT ?2")
# with a set of workflow names: one index range per name (workflow_jobs_ready_by_name),
# plus the jobs any worker may take (a pending cancel, unless a worker backed off from
# it: then only workers with its code), plus expired leases of either
SELECT_READY_OF = ("SELECT available_at, created_at, run_id FROM workflow_jobs "
                   "WHERE workflow_name = ? AND lease_owner IS NULL AND available_at <= ? "
                   "ORDER BY available_at, created_at, run_id LIMIT ?")
SELECT_READY_CANCEL = ("SELECT available_at, created_at, run_id FROM workflow_jobs "
                       "WHERE cancel_pending = 1 AND backoff = 0 AND lease_owner IS NULL "
                       "AND available_at <= ? ORDER BY available_at, created_at, run_id "
                       "LIMIT ?")
SELECT_EXPIRED_OF = ("SELECT coalesce(available_at, ?1), created_at, run_id "
                     "FROM workflow_jobs WHERE lease_owner IS NOT NULL "
                     "AND lease_expires_at <= ?1 AND ((cancel_pending = 1 AND backoff = 0) "
                     "OR workflow_name IN (SELECT value FROM json_each(?3))) "
                     "ORDER BY coalesce(available_at, ?1), created_at, run_id LIMIT ?2")
LEASE_JOB = ("UPDATE workflow_jobs SET lease_owner = ?, lease_expires_at = ?, backoff = 0 "
             "WHERE run_id = ?")
RENEW_LEASES = ("UPDATE workflow_jobs SET lease_expires_at = ? WHERE lease_owner = ? "
                "RETURNING run_id")
# input that arrived while the run was leased makes it available at once on release;
# in a backoff (?5) only a cancel does
RELEASE_JOB = ("UPDATE workflow_jobs SET lease_owner = NULL, lease_expires_at = NULL, "
               "backoff = ?5, available_at = CASE WHEN (CASE WHEN ?5 THEN cancel_pending "
               "ELSE EXISTS (SELECT 1 FROM workflow_inbox WHERE workflow_run_id = ?1) END) "
               "THEN ?2 ELSE ?3 END "
               "WHERE run_id = ?1 AND lease_owner = ?4 RETURNING available_at")
EXPIRE_LEASES = ("UPDATE workflow_jobs SET lease_owner = NULL, lease_expires_at = NULL, "
                 "available_at = ? WHERE lease_owner IN (SELECT value FROM json_each(?))")
SELECT_RUN_STATUS = "SELECT status FROM workflow_runs WHERE id = ?"
SELECT_HOOK_RUN = ("SELECT h.workflow_run_id, h.status, r.status FROM workflow_hooks h "
                   "LEFT JOIN workflow_runs r ON r.id = h.workflow_run_id WHERE h.token = ?")
INSERT_INBOX = ("INSERT INTO workflow_inbox (workflow_run_id, kind, token, payload, "
                "created_at) VALUES (?, ?, ?, ?, ?)")
WAKE_JOB = ("UPDATE workflow_jobs SET available_at = ? "
            "WHERE run_id = ? AND lease_owner IS NULL AND backoff = 0")
# a cancel ends a backoff, and lets any worker claim the run
WAKE_JOB_TO_CANCEL = ("UPDATE workflow_jobs SET cancel_pending = 1, backoff = 0, "
                      "available_at = CASE WHEN lease_owner IS NULL THEN ?1 "
                      "ELSE available_at END WHERE run_id = ?2")
TERMINAL = ("completed", "failed", "cancelled", "continued")

DELETE_EXPIRED_SLOTS = "DELETE FROM workflow_queue_slots WHERE queue = ? AND expires_at <= ?"
SELECT_SLOT = "SELECT 1 FROM workflow_queue_slots WHERE queue = ? AND holder = ?"
DELETE_EXPIRED_WAITERS = ("DELETE FROM workflow_queue_waiters "
                          "WHERE queue = ? AND expires_at <= ?")
SELECT_WAITING_SINCE = ("SELECT waiting_since FROM workflow_queue_waiters "
                        "WHERE queue = ? AND holder = ?")
UPSERT_WAITER = ("INSERT INTO workflow_queue_waiters (queue, holder, priority, waiting_since, "
                 "expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (queue, holder) DO UPDATE "
                 "SET priority = excluded.priority, waiting_since = excluded.waiting_since, "
                 "expires_at = excluded.expires_at")
SELECT_FIRST_WAITER = ("SELECT holder FROM workflow_queue_waiters WHERE queue = ? "
                       "ORDER BY priority DESC, waiting_since, holder LIMIT 1")
COUNT_SLOTS = "SELECT count(*) FROM workflow_queue_slots WHERE queue = ?"
DELETE_OLD_GRANTS = "DELETE FROM workflow_queue_grants WHERE queue = ? AND granted_at <= ?"
COUNT_GRANTS = "SELECT count(*) FROM workflow_queue_grants WHERE queue = ?"
# the grant `count` places from the newest: when it leaves the window, one more fits
SELECT_NTH_GRANT = ("SELECT granted_at FROM workflow_queue_grants WHERE queue = ? "
                    "ORDER BY granted_at DESC, id DESC LIMIT 1 OFFSET ?")
INSERT_SLOT = "INSERT INTO workflow_queue_slots (queue, holder, expires_at) VALUES (?, ?, ?)"
INSERT_GRANT = "INSERT INTO workflow_queue_grants (queue, granted_at) VALUES (?, ?)"
DELETE_WAITER = "DELETE FROM workflow_queue_waiters WHERE queue = ? AND holder = ?"
DELETE_SLOT = "DELETE FROM workflow_queue_slots WHERE queue = ? AND holder = ?"
RENEW_SLOTS = ("UPDATE workflow_queue_slots SET expires_at = ?1 "
               "WHERE substr(holder, 1, length(?2)) = ?2")

#: seconds a waiter behind another one (or a full queue) waits before asking again
SLOT_RETRY = 0.05


def claim_runs(conn: sqlite3.Connection, owner: str, limit: int, lease_seconds: float,
               now: dt.datetime, workflows: Collection[str] | None = None) -> list[str]:
    if limit <= 0:
        return []
    at = encode_time(now)
    ready: list[tuple[str, str, str]]
    if workflows is None:
        ready = conn.execute(SELECT_READY, (at, limit)).fetchall()
        ready += conn.execute(SELECT_EXPIRED, numbered(at, limit)).fetchall()
    else:
        names = sorted(workflows)
        ready = []
        for name in names:
            ready += conn.execute(SELECT_READY_OF, (name, at, limit)).fetchall()
        ready += conn.execute(SELECT_READY_CANCEL, (at, limit)).fetchall()
        ready += conn.execute(SELECT_EXPIRED_OF, numbered(at, limit, _json_list(names))).fetchall()
        ready = list(set(ready))  # a cancelled run of a listed workflow comes twice
    ready.sort()
    claimed = [run_id for _, _, run_id in ready[:limit]]
    expires = encode_time(now + dt.timedelta(seconds=lease_seconds))
    conn.executemany(LEASE_JOB, [(owner, expires, run_id) for run_id in claimed])
    return claimed


def renew_leases(conn: sqlite3.Connection, owner: str, lease_seconds: float,
                 now: dt.datetime) -> set[str]:
    expires = encode_time(now + dt.timedelta(seconds=lease_seconds))
    return {run_id for (run_id,) in conn.execute(RENEW_LEASES, (expires, owner)).fetchall()}


def release_run(conn: sqlite3.Connection, run_id: str, owner: str,
                wake_at: dt.datetime | None, now: dt.datetime, backoff: bool) -> bool:
    """Return whether the run is now claimable at some time (so workers should look)."""
    wake = None if wake_at is None else encode_time(wake_at)
    row = conn.execute(RELEASE_JOB, numbered(run_id, encode_time(now), wake, owner,
                                             int(backoff))).fetchone()
    return row is not None and row[0] is not None


def expire_leases(conn: sqlite3.Connection, owners: Sequence[str], now: dt.datetime) -> int:
    return int(conn.execute(EXPIRE_LEASES, (encode_time(now), _json_list(owners))).rowcount)


def _json_list(values: Sequence[str]) -> str:
    return msgspec.json.encode(list(values)).decode()


def request_cancel(conn: sqlite3.Connection, run_id: str, now: dt.datetime) -> bool:
    row = conn.execute(SELECT_RUN_STATUS, (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    if row[0] in TERMINAL:
        return False
    _push_inbox(conn, run_id, "cancel", None, None, now)
    return True


def resume_hook(conn: sqlite3.Connection, token: str, payload: Raw, now: dt.datetime) -> str:
    row = conn.execute(SELECT_HOOK_RUN, (token,)).fetchone()
    if row is None or row[1] != "active":
        raise HookNotFoundError(f"hook not found: {token!r} (unknown or disposed)")
    run_id, _, run_status = row
    if run_status in TERMINAL:
        raise RunFinishedError(f"run {run_id} has finished; hook {token!r} "
                               f"takes no more payloads")
    _push_inbox(conn, run_id, "hook", token, payload, now)
    return str(run_id)


def send_message(conn: sqlite3.Connection, run_id: str, topic: str, payload: Raw,
                 now: dt.datetime) -> str:
    row = conn.execute(SELECT_RUN_STATUS, (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    if row[0] in TERMINAL:
        raise RunFinishedError(f"run {run_id} is {row[0]}; it takes no more messages")
    _push_inbox(conn, run_id, "message", topic, payload, now)
    return run_id


def child_ended(conn: sqlite3.Connection, parent_run_id: str, child_run_id: str,
                now: dt.datetime) -> str | None:
    row = conn.execute(SELECT_RUN_STATUS, (parent_run_id,)).fetchone()
    if row is None or row[0] in TERMINAL:
        return None
    _push_inbox(conn, parent_run_id, "child_ended", child_run_id, None, now)
    return parent_run_id


def _push_inbox(conn: sqlite3.Connection, run_id: str, kind: str, token: str | None,
                payload: Raw | None, now: dt.datetime) -> None:
    at = encode_time(now)
    conn.execute(INSERT_INBOX, (run_id, kind, token, encode_json(payload), at))
    if kind == "cancel":
        conn.execute(WAKE_JOB_TO_CANCEL, numbered(at, run_id))
    else:
        conn.execute(WAKE_JOB, (at, run_id))


def acquire_slot(conn: sqlite3.Connection, queue: str, holder: str, concurrency: int | None,
                 rate_limit: tuple[int, float] | None, priority: int, lease_seconds: float,
                 now: dt.datetime) -> float | None:
    """The memory world's algorithm, on tables: see `World.acquire_slot`."""
    at = encode_time(now)
    expires = encode_time(now + dt.timedelta(seconds=lease_seconds))
    conn.execute(DELETE_EXPIRED_SLOTS, (queue, at))
    if conn.execute(SELECT_SLOT, (queue, holder)).fetchone() is not None:
        return None
    conn.execute(DELETE_EXPIRED_WAITERS, (queue, at))
    since = conn.execute(SELECT_WAITING_SINCE, (queue, holder)).fetchone()
    conn.execute(UPSERT_WAITER, (queue, holder, priority, at if since is None else since[0],
                                 expires))
    if conn.execute(SELECT_FIRST_WAITER, (queue,)).fetchone()[0] != holder:
        return SLOT_RETRY
    if concurrency is not None and conn.execute(COUNT_SLOTS, (queue,)).fetchone()[0] \
            >= concurrency:
        return SLOT_RETRY  # a release in this process wakes waiters sooner
    if rate_limit is not None:
        count, period = rate_limit
        window_start = now - dt.timedelta(seconds=period)
        conn.execute(DELETE_OLD_GRANTS, (queue, encode_time(window_start)))
        if conn.execute(COUNT_GRANTS, (queue,)).fetchone()[0] >= count:
            nth = decode_time(conn.execute(SELECT_NTH_GRANT, (queue, count - 1)).fetchone()[0])
            assert nth is not None
            return max(0.001, (nth - window_start).total_seconds())
    conn.execute(INSERT_SLOT, (queue, holder, expires))
    conn.execute(INSERT_GRANT, (queue, at))
    conn.execute(DELETE_WAITER, (queue, holder))
    return None


def release_slot(conn: sqlite3.Connection, queue: str, holder: str) -> None:
    conn.execute(DELETE_SLOT, (queue, holder))
    conn.execute(DELETE_WAITER, (queue, holder))


def renew_slots(conn: sqlite3.Connection, holder_prefix: str, lease_seconds: float,
                now: dt.datetime) -> None:
    expires = encode_time(now + dt.timedelta(seconds=lease_seconds))
    conn.execute(RENEW_SLOTS, numbered(expires, holder_prefix))
