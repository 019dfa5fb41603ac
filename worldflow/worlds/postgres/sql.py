"""The Postgres world's queries: constants, values always as $n parameters."""

from __future__ import annotations

import itertools

#: the event types of a step's life (the rows of the workflow_steps view)
STEP_EVENT_TYPES = "'step_started', 'step_completed', 'step_retrying', 'step_failed'"


def step_counts(run_id: str, more: str = "") -> str:
    """A query of run `run_id`'s step counts, as one bigint[]: total, completed, failed,
    running. Each step's status is its latest step event's (as the workflow_steps view
    says it). `more`: a UNION ALL of (correlation_id, seq, event_type) rows the run's
    stored events do not show yet (those written by the same statement)."""
    return ("SELECT ARRAY[count(*), count(*) FILTER (WHERE t = 'step_completed'), "
            "count(*) FILTER (WHERE t = 'step_failed'), "
            "count(*) FILTER (WHERE t = 'step_started')]::bigint[] "
            "FROM (SELECT DISTINCT ON (e.correlation_id) e.event_type AS t "
            "FROM (SELECT correlation_id, seq, event_type FROM workflow_events "
            f"WHERE workflow_run_id = {run_id} AND event_type IN ({STEP_EVENT_TYPES})"
            f"{more}) AS e ORDER BY e.correlation_id, e.seq DESC) AS s")


def run_columns(prefix: str = "") -> str:
    """A run's columns (`prefix`: its table's alias and a dot). The step counts of a
    live run (pending or running) are counted from its step events as it is read: a
    step's commit does not touch its run's row. A run's end stores them
    (`worldflow_apply`), and an ended run's are read as stored."""
    p = prefix
    counts = step_counts(f"{prefix or 'workflow_runs.'}id")
    return (f"{p}id, {p}workflow_name, {p}status, {p}input::text, {p}output::text, "
            f"{p}error::text, {p}created_at, {p}started_at, {p}completed_at, {p}updated_at, "
            f"{p}queue, {p}parent_run_id, {p}tags::text, "
            f"CASE WHEN {p}status IN ('pending', 'running') THEN ({counts}) "
            f"ELSE ARRAY[{p}steps_total, {p}steps_completed, {p}steps_failed, "
            f"{p}steps_running]::bigint[] END")


RUN_COLUMNS = run_columns()
GET_RUN = f"SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1"


def _list_runs_query(status: bool, name: bool, after: bool, since: bool, *,
                     tagged: int) -> tuple[str, tuple[str, ...]]:
    """The listing query of one filter combination and the names of its $n parameters
    in order, built once at import (values stay parameters; a query per combination,
    so that each plan uses its index ranges rather than `$n IS NULL OR ...` filters).
    `tagged`: 0 no tag filter, 1 one tag, 2 several. A tag filter walks
    workflow_run_tags_match for the first tag newest first and stops after a page;
    further tags are checked per run by primary key."""
    if not tagged:
        table, prefix, order_at, order_id = "workflow_runs", "", "created_at", "id"
    else:
        table = "workflow_run_tags t JOIN workflow_runs r ON r.id = t.workflow_run_id"
        prefix, order_at, order_id = "r.", "t.created_at", "t.workflow_run_id"
    names: list[str] = []

    def param(name: str) -> str:
        names.append(name)
        return f"${len(names)}"

    conditions = []
    if tagged:
        conditions.append(f"t.key = {param('tag_key')} AND t.value = {param('tag_value')}")
    if tagged > 1:
        keys, values = param("tag_keys"), param("tag_values")
        conditions.append(f"(SELECT count(*) FROM workflow_run_tags o "
                          f"WHERE o.workflow_run_id = r.id AND (o.key, o.value) IN "
                          f"(SELECT * FROM unnest({keys}::text[], {values}::text[]))) "
                          f"= cardinality({keys}::text[])")
    if status:
        conditions.append(f"{prefix}status = {param('status')}")
    if name:
        conditions.append(f"{prefix}workflow_name = {param('name')}")
    if after:
        conditions.append(f"({order_at}, {order_id}) < "
                          f"({param('after_at')}, {param('after_id')})")
    if since:
        conditions.append(f"{order_at} >= {param('since')}")
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    columns = run_columns(prefix)
    query = (f"SELECT {columns} FROM {table}{where} "
             f"ORDER BY {order_at} DESC, {order_id} DESC LIMIT {param('limit')}")
    return query, tuple(names)


#: by (status, workflow name, cursor, since, tags: 0/1/2): see `_list_runs_query`
LIST_RUNS_BY_FILTER = {(*flags, tagged): _list_runs_query(*flags, tagged=tagged)
                       for flags in itertools.product((False, True), repeat=4)
                       for tagged in (0, 1, 2)}
LIST_STEPS = ("SELECT id, workflow_run_id, correlation_id, step_name, status, attempt, "
              "input::text, output::text, error::text, started_at, completed_at "
              "FROM workflow_steps WHERE workflow_run_id = $1 ORDER BY position")
LIST_EVENTS = ("SELECT seq, payload::text, created_at FROM workflow_events "
               "WHERE workflow_run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")

# SKIP LOCKED applies while scanning, so LIMIT counts rows this claim can take; jobs
# never leased and jobs whose lease expired are taken by two scans of their own indexes
CLAIM_READY = """
UPDATE workflow_jobs j SET lease_owner = $4, lease_expires_at = $5, backoff = false
  FROM (SELECT run_id FROM workflow_jobs
         WHERE job_prefix = $1 AND lease_owner IS NULL AND available_at <= $2
         ORDER BY available_at, created_at, run_id LIMIT $3
         FOR UPDATE SKIP LOCKED) ready
 WHERE j.run_id = ready.run_id RETURNING j.run_id
"""
CLAIM_EXPIRED = """
UPDATE workflow_jobs j SET lease_owner = $4, lease_expires_at = $5, backoff = false
  FROM (SELECT run_id FROM workflow_jobs
         WHERE job_prefix = $1 AND lease_owner IS NOT NULL AND lease_expires_at <= $2
         ORDER BY lease_expires_at LIMIT $3
         FOR UPDATE SKIP LOCKED) expired
 WHERE j.run_id = expired.run_id RETURNING j.run_id
"""
# a worker that takes only some workflows ($6): per name, one range of the partial index
# workflow_jobs_ready_by_name (LIMIT rows each; the outer LIMIT keeps the oldest), then
# jobs with a pending cancel (anyone may end a run; but after a worker backed off from
# one, only workers with its code, so none takes it again and again), then expired
# leases of either kind
CLAIM_READY_OF = """
UPDATE workflow_jobs j SET lease_owner = $4, lease_expires_at = $5, backoff = false
  FROM (SELECT r.run_id FROM unnest($6::text[]) AS n(name)
        CROSS JOIN LATERAL (
              SELECT run_id, available_at, created_at FROM workflow_jobs
               WHERE job_prefix = $1 AND workflow_name = n.name AND lease_owner IS NULL
                 AND available_at <= $2
               ORDER BY available_at, created_at, run_id LIMIT $3
               FOR UPDATE SKIP LOCKED) r
        ORDER BY r.available_at, r.created_at, r.run_id LIMIT $3) ready
 WHERE j.run_id = ready.run_id RETURNING j.run_id
"""
CLAIM_CANCEL_PENDING = """
UPDATE workflow_jobs j SET lease_owner = $4, lease_expires_at = $5, backoff = false
  FROM (SELECT run_id FROM workflow_jobs
         WHERE job_prefix = $1 AND cancel_pending AND NOT backoff AND lease_owner IS NULL
           AND available_at <= $2
         ORDER BY available_at LIMIT $3
         FOR UPDATE SKIP LOCKED) ready
 WHERE j.run_id = ready.run_id RETURNING j.run_id
"""
CLAIM_EXPIRED_OF = """
UPDATE workflow_jobs j SET lease_owner = $4, lease_expires_at = $5, backoff = false
  FROM (SELECT run_id FROM workflow_jobs
         WHERE job_prefix = $1 AND lease_owner IS NOT NULL AND lease_expires_at <= $2
           AND ((cancel_pending AND NOT backoff) OR workflow_name = ANY($6::text[]))
         ORDER BY lease_expires_at LIMIT $3
         FOR UPDATE SKIP LOCKED) expired
 WHERE j.run_id = expired.run_id RETURNING j.run_id
"""
ANY_CLAIMABLE_OF = ("SELECT EXISTS (SELECT 1 FROM workflow_jobs WHERE job_prefix = $1 "
                    "AND workflow_name = ANY($3::text[]) AND lease_owner IS NULL "
                    "AND available_at <= $2) OR EXISTS (SELECT 1 FROM workflow_jobs "
                    "WHERE job_prefix = $1 AND cancel_pending AND NOT backoff "
                    "AND lease_owner IS NULL AND available_at <= $2) "
                    "OR EXISTS (SELECT 1 FROM workflow_jobs "
                    "WHERE job_prefix = $1 AND lease_owner IS NOT NULL "
                    "AND lease_expires_at <= $2 "
                    "AND ((cancel_pending AND NOT backoff) OR workflow_name = ANY($3::text[])))")
NEXT_WAKE_OF = """
SELECT least(
  (SELECT min(m.at) FROM unnest($2::text[]) AS n(name) CROSS JOIN LATERAL (
       SELECT min(available_at) AS at FROM workflow_jobs
        WHERE job_prefix = $1 AND workflow_name = n.name AND lease_owner IS NULL
          AND available_at IS NOT NULL) m),
  (SELECT min(available_at) FROM workflow_jobs WHERE job_prefix = $1 AND cancel_pending
      AND NOT backoff AND lease_owner IS NULL AND available_at IS NOT NULL),
  (SELECT min(lease_expires_at) FROM workflow_jobs WHERE job_prefix = $1
      AND lease_owner IS NOT NULL
      AND ((cancel_pending AND NOT backoff) OR workflow_name = ANY($2::text[]))))
"""
ANY_CLAIMABLE = ("SELECT EXISTS (SELECT 1 FROM workflow_jobs WHERE job_prefix = $1 "
                 "AND lease_owner IS NULL AND available_at <= $2) OR EXISTS (SELECT 1 FROM "
                 "workflow_jobs WHERE job_prefix = $1 AND lease_owner IS NOT NULL "
                 "AND lease_expires_at <= $2)")
RENEW_LEASES = ("UPDATE workflow_jobs SET lease_expires_at = $3 "
                "WHERE job_prefix = $1 AND lease_owner = $2 RETURNING run_id")
# input that arrived while the run was leased makes it available at once on release;
# in a backoff ($5) only a cancel does
RELEASE_JOB = ("UPDATE workflow_jobs SET lease_owner = NULL, lease_expires_at = NULL, "
               "backoff = $5, available_at = CASE WHEN (CASE WHEN $5 THEN cancel_pending "
               "ELSE EXISTS (SELECT 1 FROM workflow_inbox WHERE workflow_run_id = $1) END) "
               "THEN $2 ELSE $3::timestamptz END "
               "WHERE run_id = $1 AND lease_owner = $4 RETURNING available_at")
# taken by a release and by input arriving, before anything else: whichever comes second
# runs its next statement with a fresh snapshot, so a release sees input committed just
# before it, and input sees the job released just before it (no lost wake-up)
LOCK_JOB = "SELECT 1 FROM workflow_jobs WHERE run_id = $1 FOR NO KEY UPDATE"
EXPIRE_LEASES = ("UPDATE workflow_jobs SET lease_owner = NULL, lease_expires_at = NULL, "
                 "available_at = $2 WHERE job_prefix = $1 AND lease_owner = ANY($3::text[])")
LEASE_OWNERS = ("SELECT DISTINCT lease_owner FROM workflow_jobs "
                "WHERE job_prefix = $1 AND lease_owner IS NOT NULL ORDER BY 1")
NEXT_WAKE = ("SELECT least((SELECT min(available_at) FROM workflow_jobs WHERE job_prefix = $1 "
             "AND lease_owner IS NULL AND available_at IS NOT NULL), (SELECT "
             "min(lease_expires_at) FROM workflow_jobs WHERE job_prefix = $1 "
             "AND lease_owner IS NOT NULL))")

RUN_STATUS = "SELECT status FROM workflow_runs WHERE id = $1 FOR SHARE"
HOOK_RUN = ("SELECT h.workflow_run_id, h.status, r.status FROM workflow_hooks h "
            "LEFT JOIN workflow_runs r ON r.id = h.workflow_run_id WHERE h.token = $1 "
            "FOR SHARE OF h")
INSERT_INBOX = ("INSERT INTO workflow_inbox (workflow_run_id, kind, token, payload, "
                "created_at) VALUES ($1, $2, $3, $4::json, $5)")
WAKE_JOB = ("UPDATE workflow_jobs SET available_at = $1 "
            "WHERE run_id = $2 AND lease_owner IS NULL AND NOT backoff RETURNING job_prefix")
# a cancel ends a backoff, and lets any worker claim the run
WAKE_JOB_TO_CANCEL = ("UPDATE workflow_jobs SET cancel_pending = true, backoff = false, "
                      "available_at = CASE WHEN lease_owner IS NULL THEN $1 "
                      "ELSE available_at END WHERE run_id = $2 RETURNING job_prefix")
READ_INBOX = ("SELECT id, workflow_run_id, kind, token, payload::text, created_at "
              "FROM workflow_inbox WHERE workflow_run_id = $1 ORDER BY id")
HOOK_COLUMNS = ("token, workflow_run_id, correlation_id, status, created_at, disposed_at, "
                "metadata::text")
GET_HOOK = f"SELECT {HOOK_COLUMNS} FROM workflow_hooks WHERE token = $1"
LIST_HOOKS = (f"SELECT {HOOK_COLUMNS} FROM workflow_hooks "
              "WHERE $1::text IS NULL OR workflow_run_id = $1 ORDER BY created_at, position")

STREAM_RUN_EXISTS = "SELECT 1 FROM workflow_runs WHERE id = $1"
STREAM_HEAD = ("INSERT INTO workflow_stream_heads (workflow_run_id, name) VALUES ($1, $2) "
               "ON CONFLICT DO NOTHING")
STREAM_LENGTH = ("SELECT length FROM workflow_stream_heads WHERE workflow_run_id = $1 "
                 "AND name = $2 FOR UPDATE")
INSERT_CHUNK = ("INSERT INTO workflow_streams (workflow_run_id, name, idx, data, created_at) "
                "VALUES ($1, $2, $3, $4::json, $5)")
SET_STREAM_HEAD = ("UPDATE workflow_stream_heads SET length = $3, closed = closed OR $4 "
                   "WHERE workflow_run_id = $1 AND name = $2")
READ_STREAM = ("SELECT idx, data::text, created_at FROM workflow_streams "
               "WHERE workflow_run_id = $1 AND name = $2 AND idx >= $3 ORDER BY idx LIMIT $4")
STREAM_CLOSED = ("SELECT closed FROM workflow_stream_heads WHERE workflow_run_id = $1 "
                 "AND name = $2")
LIST_STREAMS = ("SELECT name, length, closed FROM workflow_stream_heads "
                "WHERE workflow_run_id = $1 ORDER BY name")

DELETE_EXPIRED_SLOTS = "DELETE FROM workflow_queue_slots WHERE queue = $1 AND expires_at <= $2"
LOCK_QUEUE = "SELECT pg_advisory_xact_lock(hashtext($1))"
HAS_SLOT = "SELECT 1 FROM workflow_queue_slots WHERE queue = $1 AND holder = $2"
DELETE_EXPIRED_WAITERS = ("DELETE FROM workflow_queue_waiters "
                          "WHERE queue = $1 AND expires_at <= $2")
UPSERT_WAITER = ("INSERT INTO workflow_queue_waiters (queue, holder, priority, waiting_since, "
                 "expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (queue, holder) DO "
                 "UPDATE SET priority = excluded.priority, expires_at = excluded.expires_at")
FIRST_WAITER = ("SELECT holder FROM workflow_queue_waiters WHERE queue = $1 "
                "ORDER BY priority DESC, waiting_since, holder LIMIT 1")
COUNT_SLOTS = "SELECT count(*) FROM workflow_queue_slots WHERE queue = $1"
DELETE_OLD_GRANTS = "DELETE FROM workflow_queue_grants WHERE queue = $1 AND granted_at <= $2"
COUNT_GRANTS = "SELECT count(*) FROM workflow_queue_grants WHERE queue = $1"
NTH_GRANT = ("SELECT granted_at FROM workflow_queue_grants WHERE queue = $1 "
             "ORDER BY granted_at DESC, id DESC OFFSET $2 LIMIT 1")
INSERT_SLOT = "INSERT INTO workflow_queue_slots (queue, holder, expires_at) VALUES ($1, $2, $3)"
INSERT_GRANT = "INSERT INTO workflow_queue_grants (queue, granted_at) VALUES ($1, $2)"
DELETE_WAITER = "DELETE FROM workflow_queue_waiters WHERE queue = $1 AND holder = $2"
DELETE_SLOT = "DELETE FROM workflow_queue_slots WHERE queue = $1 AND holder = $2"
RENEW_SLOTS = ("UPDATE workflow_queue_slots SET expires_at = $1 "
               "WHERE starts_with(holder, $2) AND starts_with(queue, $3)")
NOTIFY = "SELECT pg_notify($1, $2)"

# A step started and completed, sent alone (the usual write of a run at low load): one
# statement, without worldflow_apply's plpgsql, jsonb skeleton and subtransaction: the
# two events, when they continue the run's log. (A step is its events: the
# workflow_steps view reads it from them; the run's row is not touched, as
# sql.run_columns counts a live run's steps as it reads.) In any other case it writes
# nothing, and the write goes through worldflow_apply, which says why: a fence that
# does not hold inserts no row; an event already there (a write sent again, another
# process's step) is a unique violation, which fails the whole statement.
# It says whether it wrote by its command tag alone (STEP_APPENDED: both events
# inserted), without a RETURNING row.
# Parameters (writer.step_append_args): $1 run id, $2 correlation id, $3 started at,
# $4 completed at, $5 step_started's seq, $6 and $7 the two events' payloads.
_FENCE = ("EXISTS (SELECT 1 FROM workflow_events\n"
          "                   WHERE workflow_run_id = {run} AND seq = {seq}::integer - {before})")
_STEP_EVENTS = """($5::integer, 'step_started', $2::text, $6::text, $3::timestamptz),
                  ($5::integer + 1, 'step_completed', $2, $7::text, $4::timestamptz)"""
_APPEND = """{started}
INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id, payload,
                             created_at)
SELECT $1, e.seq, e.event_type, e.correlation_id, e.payload::json, e.created_at
  FROM (VALUES {events})
       AS e(seq, event_type, correlation_id, payload, created_at)
 WHERE {fence}
"""
#: the command tag of a step append that wrote (no RETURNING: its rows and the client's
#: decoding of them cost more than reading the tag)
STEP_APPENDED = "INSERT 0 2"
STEP_APPEND = _APPEND.format(events=_STEP_EVENTS,
                             fence=_FENCE.format(run="$1", seq="$5", before=1), started="")
# The same with the run's start before the step (the run's first step): $8 the
# run_started event's payload, $9 its time; the run's row becomes running. The update
# checks the fence on its own, as the insert does: both see the statement's snapshot,
# so both write or neither does.
_OPENING_FENCE = _FENCE.format(run="$1", seq="$5", before=2)
STEP_APPEND_OPENING = _APPEND.format(
    events=("($5::integer - 1, 'run_started', NULL, $8::text, $9::timestamptz),\n"
            "                  " + _STEP_EVENTS),
    fence=_OPENING_FENCE, started=f"""WITH started AS (
    UPDATE workflow_runs SET status = 'running', started_at = coalesce(started_at, $9),
                             updated_at = $9
     WHERE id = $1 AND {_OPENING_FENCE})""")
#: STEP_APPEND_OPENING's tag when it wrote
STEP_APPENDED_OPENING = "INSERT 0 3"

# A run created alone and leased to its creator (start() with this process's engine, at
# low load): one statement, as STEP_APPEND is for a step, instead of worldflow_apply's
# plpgsql, jsonb skeleton and subtransaction. It creates only a run that is new: if one
# of that id, or a live one with the same dedup key, exists, it returns no row, and the
# write goes through worldflow_apply, which returns that run; a run created meanwhile by
# another process is a unique violation, which fails the statement (nothing written)
# and goes the same way. A leased run needs no wake-up of other workers.
# Parameters (writer.create_run_args): $1 run id, $2 workflow name, $3 input,
# $4 created at, $5 queue, $6 the run_created event, $7 dedup key, $8 parent run id,
# $9 tags (a JSON object, or NULL), $10 job prefix, $11 now, $12 lease owner, $13 the
# run_started event (created started), or NULL, $14 the lease's expiry.
CREATE_RUN = """
WITH fresh AS (
    SELECT 1 AS ok
     WHERE NOT EXISTS (SELECT 1 FROM workflow_runs WHERE id = $1)
       AND ($7::text IS NULL
            OR NOT EXISTS (SELECT 1 FROM workflow_runs
                            WHERE dedup_key = $7 AND status IN ('pending', 'running')))),
run AS (
    INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, updated_at,
                               queue, dedup_key, parent_run_id, tags, started_at)
    SELECT $1, $2, CASE WHEN $13::text IS NULL THEN 'pending' ELSE 'running' END,
           $3::json, $4, $4, $5, $7, $8, $9::json,
           CASE WHEN $13::text IS NOT NULL THEN $4::timestamptz END
      FROM fresh
    RETURNING 1),
tags AS (
    INSERT INTO workflow_run_tags (workflow_run_id, key, value, created_at)
    SELECT $1, t.key, t.value, $4 FROM fresh, json_each_text($9::json) AS t),
events AS (
    INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id,
                                 payload, created_at)
    SELECT $1, e.seq, e.event_type, NULL, e.payload::json, $4
      FROM fresh, (VALUES (0, 'run_created', $6::text),
                          (1, 'run_started', $13::text)) AS e(seq, event_type, payload)
     WHERE e.payload IS NOT NULL),
job AS (
    INSERT INTO workflow_jobs (run_id, job_prefix, queue, workflow_name, available_at,
                               lease_owner, lease_expires_at, created_at)
    SELECT $1, $10, $5, $2, $11, $12, $14, $11 FROM fresh)
SELECT ok FROM fresh
"""

# A run's end written alone (the usual last write of a run at low load): its end event,
# after its last step's start and completion (RUN_END_AFTER_STEP) or after nothing else
# (RUN_END), as one statement instead of a call of worldflow_apply. It does what
# worldflow_apply does for such an append when the events continue the run's log: the
# events, the run's row ended with its step counts (counted from its step events, plus
# the step's completion written here, which the statement's own snapshot does not
# show), its job and inbox deleted, its live hooks disposed, and `run_ended` notified.
# In any other case it writes nothing and the write goes through worldflow_apply (as for
# STEP_APPEND: a fence that does not hold returns 0; an event already there is a unique
# violation, which fails the whole statement).
# Parameters (writer.run_end_args): $1 run id, $2 the append's first seq, $3 the end
# event's type, $4 its payload, $5 its time (the run's end), $6 the run's status, $7 its
# output, $8 its error (JSON text or NULL), $9 the NOTIFY channel; after a step: $10 the
# step's correlation id, $11 its start, $12 its completion, $13 and $14 the payloads of
# its two events.
_END_FENCE = _FENCE.format(run="$1", seq="$2", before=1)
_END = """
WITH events AS (
    INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id,
                                 payload, created_at)
    SELECT $1, e.seq, e.event_type, e.correlation_id, e.payload::json, e.created_at
      FROM (VALUES {events}) AS e(seq, event_type, correlation_id, payload, created_at)
     WHERE {fence}),
ended AS (
    UPDATE workflow_runs r
       SET status = $6, output = $7::json, error = $8::json, completed_at = $5,
           updated_at = $5,
           (steps_total, steps_completed, steps_failed, steps_running) = (
               SELECT c[1], c[2], c[3], c[4] FROM ({counts}) AS x(c))
     WHERE r.id = $1 AND {fence}
    RETURNING 1),
job AS (DELETE FROM workflow_jobs WHERE run_id = $1 AND {fence}),
inbox AS (DELETE FROM workflow_inbox WHERE workflow_run_id = $1 AND {fence}),
hooks AS (
    UPDATE workflow_hooks SET status = 'disposed', disposed_at = $5
     WHERE workflow_run_id = $1 AND status = 'active' AND {fence}),
notified AS (
    SELECT pg_notify($9, json_build_object('type', 'run_ended', 'run_id', $1)::text)
      FROM ended)
SELECT count(*) FROM notified
"""
_END_EVENT = "($2::integer + {offset}, $3::text, NULL::text, $4::text, $5::timestamptz)"
RUN_END = _END.format(events=_END_EVENT.format(offset=0), fence=_END_FENCE,
                      counts=step_counts("$1"))
RUN_END_AFTER_STEP = _END.format(
    events="""($2::integer, 'step_started', $10::text, $13::text, $11::timestamptz),
                  ($2::integer + 1, 'step_completed', $10, $14::text, $12::timestamptz),
                  """ + _END_EVENT.format(offset=2),
    fence=_END_FENCE,
    counts=step_counts("$1", " UNION ALL SELECT $10::text, $2::integer + 1, "
                             "'step_completed'"))
