"""Writes to runs and their event logs, with the projections, as plain sqlite3 calls.

These functions run inside the writer's transaction (each under its own savepoint), so
whatever they raise undoes only their own changes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING, Any

from worldflow.core.events import TERMINAL_EVENTS, HookCreated, RunCreated, encode_event
from worldflow.core.records import RunRecord, RunStatus
from worldflow.errors import HookConflictError, LeaseLostError, RunNotFoundError
from worldflow.worlds.projection import project
from worldflow.worlds.sqlite.codec import (
    RUN_COLUMNS,
    decode_run,
    encode_error,
    encode_json,
    encode_time,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from worldflow.core.events import EventRecord
    from worldflow.core.records import NewRun

__all__ = ["append_events", "create_run"]

SELECT_RUN = "SELECT " + RUN_COLUMNS + " FROM workflow_runs WHERE id = ?"
SELECT_LIVE_DEDUP = ("SELECT " + RUN_COLUMNS + " FROM workflow_runs WHERE dedup_key = ? "
                     "AND dedup_key IS NOT NULL AND status IN ('pending', 'running')")
INSERT_RUN = ("INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
              "updated_at, queue, dedup_key) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)")
INSERT_EVENT = ("INSERT INTO workflow_events (workflow_run_id, seq, event_type, "
                "correlation_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
INSERT_JOB = ("INSERT INTO workflow_jobs (run_id, queue, available_at, lease_owner, "
              "lease_expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)")
SELECT_LAST_SEQ = "SELECT max(seq) FROM workflow_events WHERE workflow_run_id = ?"
SELECT_HOOK_HOLDER = ("SELECT workflow_run_id FROM workflow_hooks "
                      "WHERE token = ? AND status = 'active'")
DELETE_INBOX_MESSAGE = "DELETE FROM workflow_inbox WHERE id = ? AND workflow_run_id = ?"
DELETE_INBOX = "DELETE FROM workflow_inbox WHERE workflow_run_id = ?"
DELETE_JOB = "DELETE FROM workflow_jobs WHERE run_id = ?"
DISPOSE_RUN_HOOKS = ("UPDATE workflow_hooks SET status = 'disposed', disposed_at = ? "
                     "WHERE workflow_run_id = ? AND status = 'active'")

# One statement per projection op of worldflow.worlds.projection (see `Op` there).
PROJECTIONS = {
    "run_started": ("UPDATE workflow_runs SET status = 'running', "
                    "started_at = coalesce(started_at, ?2), updated_at = ?2 WHERE id = ?1"),
    "run_finished": ("UPDATE workflow_runs SET status = ?2, output = ?3, error = ?4, "
                     "completed_at = ?5, updated_at = ?5 WHERE id = ?1"),
    "step_started": ("INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, "
                     "step_name, status, attempt, input, started_at) "
                     "VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7) "
                     "ON CONFLICT (id) DO UPDATE SET status = 'running', "
                     "attempt = excluded.attempt, error = NULL"),
    "step_completed": ("UPDATE workflow_steps SET status = 'completed', attempt = ?2, "
                       "output = ?3, error = NULL, completed_at = ?4 WHERE id = ?1"),
    "step_retrying": ("UPDATE workflow_steps SET status = 'pending', attempt = ?2, "
                      "error = ?3 WHERE id = ?1"),
    "step_failed": ("UPDATE workflow_steps SET status = 'failed', attempt = ?2, error = ?3, "
                    "completed_at = ?4 WHERE id = ?1"),
    # a disposed token may be taken again by a new hook (the memory world does the same)
    "hook_created": ("INSERT INTO workflow_hooks (token, workflow_run_id, correlation_id, "
                     "status, created_at) VALUES (?1, ?2, ?3, 'active', ?4) "
                     "ON CONFLICT (token) DO UPDATE SET workflow_run_id = excluded."
                     "workflow_run_id, correlation_id = excluded.correlation_id, "
                     "status = 'active', created_at = excluded.created_at, "
                     "disposed_at = NULL"),
    "hook_disposed": ("UPDATE workflow_hooks SET status = 'disposed', disposed_at = ?2 "
                      "WHERE token = ?1 AND status = 'active'"),
}


def create_run(conn: sqlite3.Connection, run: NewRun, lease_owner: str | None,
               lease_seconds: float, now: dt.datetime) -> tuple[RunRecord, bool]:
    row = conn.execute(SELECT_RUN, (run.run_id,)).fetchone()
    if row is None and run.dedup_key is not None:
        row = conn.execute(SELECT_LIVE_DEDUP, (run.dedup_key,)).fetchone()
    if row is not None:
        return decode_run(row), False
    created_at = encode_time(run.created_at)
    conn.execute(INSERT_RUN, (run.run_id, run.workflow_name, encode_json(run.input),
                              created_at, created_at, run.queue, run.dedup_key))
    event = RunCreated(run.workflow_name, run.input)
    conn.execute(INSERT_EVENT, (run.run_id, 0, "run_created", None,
                                encode_event(event).decode(), created_at))
    at = encode_time(now)
    expires = (None if lease_owner is None
               else encode_time(now + dt.timedelta(seconds=lease_seconds)))
    conn.execute(INSERT_JOB, (run.run_id, run.queue, at, lease_owner, expires, at))
    record = RunRecord(run.run_id, run.workflow_name, RunStatus.PENDING, run.input, None,
                       None, run.created_at, None, None, run.created_at, run.queue)
    return record, True


def append_events(conn: sqlite3.Connection, run_id: str, records: Sequence[EventRecord],
                  inbox_ids: Sequence[int]) -> bool:
    """Append and project; return whether the run ended (its waiters are then woken)."""
    last = conn.execute(SELECT_LAST_SEQ, (run_id,)).fetchone()[0]
    if last is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    for i, rec in enumerate(records):
        # fencing: a seq at or below the last one means another worker wrote this run
        if rec.seq <= last + i or rec.seq != records[0].seq + i:
            raise LeaseLostError(f"run {run_id}: event seq {rec.seq} already recorded")
    for rec in records:
        if isinstance(rec.event, HookCreated):
            holder = conn.execute(SELECT_HOOK_HOLDER, (rec.event.token,)).fetchone()
            if holder is not None:
                raise HookConflictError(f"hook token {rec.event.token!r} is already in use "
                                        f"by run {holder[0]}")
    try:
        conn.executemany(INSERT_EVENT, [
            (run_id, rec.seq, rec.event_type, rec.correlation_id,
             encode_event(rec.event).decode(), encode_time(rec.created_at))
            for rec in records])
    except sqlite3.IntegrityError as exc:  # UNIQUE (run, seq): the same fence, enforced
        raise LeaseLostError(f"run {run_id}: event seq already recorded") from exc
    finished = False
    for rec in records:
        op = project(rec)
        if op is not None:
            conn.execute(PROJECTIONS[op.name], _projection_params(op.name, op.args))
        if isinstance(rec.event, TERMINAL_EVENTS):
            finished = True
    if inbox_ids:
        conn.executemany(DELETE_INBOX_MESSAGE, [(i, run_id) for i in inbox_ids])
    if finished:
        # the run's live state goes with it; its dedup key is freed by its status
        conn.execute(DELETE_JOB, (run_id,))
        conn.execute(DELETE_INBOX, (run_id,))
        conn.execute(DISPOSE_RUN_HOOKS, (encode_time(records[-1].created_at), run_id))
    return finished


def _projection_params(name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """An op's args as stored values: times as text, JSON and errors as text."""
    match name:
        case "run_started":
            run_id, at = args
            return run_id, encode_time(at)
        case "run_finished":
            run_id, status, output, error, at = args
            return run_id, status, encode_json(output), encode_error(error), encode_time(at)
        case "step_started":
            step_id, run_id, cid, step_name, attempt, inp, at = args
            return step_id, run_id, cid, step_name, attempt, encode_json(inp), encode_time(at)
        case "step_completed":
            step_id, attempt, output, at = args
            return step_id, attempt, encode_json(output), encode_time(at)
        case "step_retrying":
            step_id, attempt, error = args
            return step_id, attempt, encode_error(error)
        case "step_failed":
            step_id, attempt, error, at = args
            return step_id, attempt, encode_error(error), encode_time(at)
        case "hook_created":
            token, run_id, cid, at = args
            return token, run_id, cid, encode_time(at)
        case "hook_disposed":
            token, at = args
            return token, encode_time(at)
    raise ValueError(f"unknown projection op {name!r}")
