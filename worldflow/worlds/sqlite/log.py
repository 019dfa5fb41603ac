"""Writes to runs and their event logs, with the projections, as plain sqlite3 calls.

These functions run inside the writer's transaction (each under its own savepoint), so
whatever they raise undoes only their own changes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING

from worldflow.core.events import RunStarted, StepStarted, encode_event
from worldflow.core.records import RunRecord, created_events, created_run
from worldflow.errors import HookConflictError, LeaseLostError, RunNotFoundError
from worldflow.worlds import projection
from worldflow.worlds.projection import check_fence, plan_append
from worldflow.worlds.sqlite.codec import (
    RUN_COLUMNS,
    decode_run,
    encode_error,
    encode_json,
    encode_tags,
    encode_time,
    numbered,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from worldflow.core.events import EventRecord
    from worldflow.core.records import NewRun
    from worldflow.worlds.projection import ProjectionOp

__all__ = ["Append", "append_events", "create_run", "merge_appends"]

SELECT_RUN = "SELECT " + RUN_COLUMNS + " FROM workflow_runs WHERE id = ?"
SELECT_LIVE_DEDUP = ("SELECT " + RUN_COLUMNS + " FROM workflow_runs WHERE dedup_key = ? "
                     "AND dedup_key IS NOT NULL AND status IN ('pending', 'running')")
INSERT_RUN = ("INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
              "updated_at, queue, dedup_key, parent_run_id, tags, started_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_TAG = ("INSERT INTO workflow_run_tags (workflow_run_id, key, value, created_at) "
              "VALUES (?, ?, ?, ?)")
INSERT_EVENT = ("INSERT INTO workflow_events (workflow_run_id, seq, event_type, "
                "correlation_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
INSERT_JOB = ("INSERT INTO workflow_jobs (run_id, queue, available_at, lease_owner, "
              "lease_expires_at, created_at, workflow_name) VALUES (?, ?, ?, ?, ?, ?, ?)")
SELECT_LAST_SEQ = "SELECT max(seq) FROM workflow_events WHERE workflow_run_id = ?"
SELECT_HOOK_HOLDER = ("SELECT workflow_run_id FROM workflow_hooks "
                      "WHERE token = ? AND status = 'active'")
DELETE_INBOX_MESSAGE = "DELETE FROM workflow_inbox WHERE id = ? AND workflow_run_id = ?"
DELETE_INBOX = "DELETE FROM workflow_inbox WHERE workflow_run_id = ?"
DELETE_JOB = "DELETE FROM workflow_jobs WHERE run_id = ?"
DISPOSE_RUN_HOOKS = ("UPDATE workflow_hooks SET status = 'disposed', disposed_at = ? "
                     "WHERE workflow_run_id = ? AND status = 'active'")

# (the statements written for every step and run take their values in order, by
# position: binding by name, as numbered placeholders need, costs twice as much)
RUN_STARTED = ("UPDATE workflow_runs SET status = 'running', "
               "started_at = coalesce(started_at, ?), updated_at = ? WHERE id = ?")
RUN_FINISHED = ("UPDATE workflow_runs SET status = ?, output = ?, error = ?, "
                "completed_at = ?, updated_at = ? WHERE id = ?")
STEP_STARTED = ("INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, "
                "step_name, status, attempt, input, started_at) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = 'running', "
                "attempt = excluded.attempt, error = NULL")
# a step started and completed in one append (the usual case: the start waits for the
# completion to share its commit): one row inserted completed, so that the step counts'
# triggers run once; a later attempt's row is updated as start and completion would
STEP_DONE = ("INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, "
             "step_name, status, attempt, input, output, started_at, completed_at) "
             "VALUES (?, ?, ?, ?, 'completed', ?, ?, ?, ?, ?) "
             "ON CONFLICT (id) DO UPDATE SET status = 'completed', "
             "attempt = excluded.attempt, output = excluded.output, error = NULL, "
             "completed_at = excluded.completed_at")
STEP_COMPLETED = ("UPDATE workflow_steps SET status = 'completed', attempt = ?, "
                  "output = ?, error = NULL, completed_at = ? WHERE id = ?")
STEP_RETRYING = ("UPDATE workflow_steps SET status = 'pending', attempt = ?, "
                 "error = ? WHERE id = ?")
STEP_FAILED = ("UPDATE workflow_steps SET status = 'failed', attempt = ?, error = ?, "
               "completed_at = ? WHERE id = ?")
# a disposed token may be taken again by a new hook (the memory world does the same)
HOOK_CREATED = ("INSERT INTO workflow_hooks (token, workflow_run_id, correlation_id, "
                "status, created_at, metadata) VALUES (?, ?, ?, 'active', ?, ?) "
                "ON CONFLICT (token) DO UPDATE SET workflow_run_id = excluded."
                "workflow_run_id, correlation_id = excluded.correlation_id, "
                "status = 'active', created_at = excluded.created_at, "
                "disposed_at = NULL, metadata = excluded.metadata")
HOOK_DISPOSED = ("UPDATE workflow_hooks SET status = 'disposed', disposed_at = ? "
                 "WHERE token = ? AND status = 'active'")
# a consumed cancel no longer makes the run claimable by workers without its code
SET_CANCEL_PENDING = ("UPDATE workflow_jobs SET cancel_pending = EXISTS (SELECT 1 FROM "
                      "workflow_inbox WHERE workflow_run_id = ?1 AND kind = 'cancel') "
                      "WHERE run_id = ?1")


def create_run(conn: sqlite3.Connection, run: NewRun, lease_owner: str | None,
               lease_seconds: float, now: dt.datetime) -> tuple[RunRecord, bool]:
    row = conn.execute(SELECT_RUN, (run.run_id,)).fetchone()
    if row is None and run.dedup_key is not None:
        row = conn.execute(SELECT_LIVE_DEDUP, (run.dedup_key,)).fetchone()
    if row is not None:
        return decode_run(row), False
    record = created_run(run)
    created_at = encode_time(run.created_at)
    conn.execute(INSERT_RUN, (run.run_id, run.workflow_name, record.status.value,
                              encode_json(run.input), created_at, created_at, run.queue,
                              run.dedup_key, run.parent_run_id, encode_tags(run.tags),
                              created_at if run.started else None))
    if run.tags:
        conn.executemany(INSERT_TAG, [(run.run_id, key, value, created_at)
                                      for key, value in run.tags.items()])
    conn.executemany(INSERT_EVENT, [
        (run.run_id, rec.seq, rec.event_type, None, encode_event(rec.event).decode(),
         created_at) for rec in created_events(run)])
    at = encode_time(now)
    expires = (None if lease_owner is None
               else encode_time(now + dt.timedelta(seconds=lease_seconds)))
    conn.execute(INSERT_JOB, (run.run_id, run.queue, at, lease_owner, expires, at,
                              run.workflow_name))
    return record, True


def append_events(conn: sqlite3.Connection, run_id: str, records: list[EventRecord],
                  inbox_ids: Sequence[int]) -> bool:
    """Append and project; return whether the run ended (its waiters are then woken)."""
    last = conn.execute(SELECT_LAST_SEQ, (run_id,)).fetchone()[0]
    if last is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    check_fence(run_id, last, records)
    plan = plan_append(records)
    for token in plan.new_hook_tokens:
        holder = conn.execute(SELECT_HOOK_HOLDER, (token,)).fetchone()
        if holder is not None:
            raise HookConflictError(f"hook token {token!r} is already in use "
                                    f"by run {holder[0]}")
    # each time as text once: a step's row takes the same times as its events
    times = {id(rec.created_at): encode_time(rec.created_at) for rec in records}
    try:
        conn.executemany(INSERT_EVENT, [
            (run_id, rec.seq, rec.event_type, rec.correlation_id,
             encode_event(rec.event).decode(), times[id(rec.created_at)])
            for rec in records])
    except sqlite3.IntegrityError as exc:  # UNIQUE (run, seq): the same fence, enforced
        raise LeaseLostError(f"run {run_id}: event seq already recorded") from exc
    for op, completed in projection.with_completions(plan.ops):
        if completed is not None:  # one row inserted completed
            assert type(op) is projection.StepStarted
            conn.execute(STEP_DONE, (
                op.step_id, op.run_id, op.correlation_id, op.step_name, completed.attempt,
                encode_json(op.input), encode_json(completed.output),
                times.get(id(op.at)) or encode_time(op.at),
                times.get(id(completed.at)) or encode_time(completed.at)))
            continue
        statement, params = _statement(op)
        conn.execute(statement, params)
    if plan.finished_at is not None:
        # the run's live state goes with it; its dedup key is freed by its status
        conn.execute(DELETE_JOB, (run_id,))
        conn.execute(DELETE_INBOX, (run_id,))
        conn.execute(DISPOSE_RUN_HOOKS, (encode_time(plan.finished_at), run_id))
    elif inbox_ids:
        conn.executemany(DELETE_INBOX_MESSAGE, [(i, run_id) for i in inbox_ids])
        conn.execute(SET_CANCEL_PENDING, numbered(run_id))
    return plan.finishes


class Append:
    """An append as the writer's request: applied by calling it on the connection, and
    open to the writer, which merges a run's appends that continue each other within a
    batch (`merge_appends`)."""

    __slots__ = ("inbox_ids", "records", "run_id")

    def __init__(self, run_id: str, records: list[EventRecord],
                 inbox_ids: list[int]) -> None:
        self.run_id = run_id
        self.records = records
        self.inbox_ids = inbox_ids

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return append_events(conn, self.run_id, self.records, self.inbox_ids)


#: events of an append that may take the run's next append into it: a step's start,
#: which waits for the step's completion to share its commit (and the run's start)
_OPENING = (StepStarted, RunStarted)


def merge_appends(requests: list[Callable[[sqlite3.Connection], object]]
                  ) -> tuple[list[Callable[[sqlite3.Connection], object]], list[int]]:
    """The requests to apply, each append of a step's start (and its run's start) taking
    in the next append of its run when that continues it: one fence check, one insert
    of the events, and the step's row inserted completed. For each given request, the
    index of the applied one that carries it."""
    out: list[Callable[[sqlite3.Connection], object]] = []
    carried_by: list[int] = []
    opening: dict[str, int] = {}  # run id -> index in `out` of its open append
    for request in requests:
        if type(request) is not Append or not request.records:
            carried_by.append(len(out))
            out.append(request)
            continue
        index = opening.pop(request.run_id, None)
        earlier = out[index] if index is not None else None
        if (type(earlier) is Append
                and request.records[0].seq == earlier.records[-1].seq + 1):
            request = Append(request.run_id, earlier.records + request.records,
                             request.inbox_ids)
            assert index is not None
            out[index] = request
        else:
            index = len(out)
            out.append(request)
        carried_by.append(index)
        if not request.inbox_ids and all(type(r.event) in _OPENING
                                         for r in request.records):
            opening[request.run_id] = index
    return out, carried_by


def _statement(op: ProjectionOp) -> tuple[str, tuple[object, ...]]:
    """An op's statement, and its fields as stored values (times, JSON, errors as text)."""
    match op:
        case projection.RunStarted(run_id=run_id, at=at):
            time = encode_time(at)
            return RUN_STARTED, (time, time, run_id)
        case projection.RunFinished(run_id=run_id, status=status, at=at, output=output,
                                    error=error):
            time = encode_time(at)
            return RUN_FINISHED, (status, encode_json(output), encode_error(error), time,
                                  time, run_id)
        case projection.StepStarted(step_id=step_id, run_id=run_id, correlation_id=cid,
                                    step_name=step_name, attempt=attempt, input=inp, at=at):
            return STEP_STARTED, (step_id, run_id, cid, step_name, attempt,
                                  encode_json(inp), encode_time(at))
        case projection.StepCompleted(step_id=step_id, attempt=attempt, output=output, at=at):
            return STEP_COMPLETED, (attempt, encode_json(output), encode_time(at), step_id)
        case projection.StepRetrying(step_id=step_id, attempt=attempt, error=error):
            return STEP_RETRYING, (attempt, encode_error(error), step_id)
        case projection.StepFailed(step_id=step_id, attempt=attempt, error=error, at=at):
            return STEP_FAILED, (attempt, encode_error(error), encode_time(at), step_id)
        case projection.HookCreated(token=token, run_id=run_id, correlation_id=cid, at=at,
                                    metadata=metadata):
            return HOOK_CREATED, (token, run_id, cid, encode_time(at), encode_json(metadata))
        case projection.HookDisposed(token=token, at=at):
            return HOOK_DISPOSED, (encode_time(at), token)
