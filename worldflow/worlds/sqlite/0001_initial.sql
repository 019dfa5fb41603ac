-- worldflow SQLite schema, version 1.
-- The user-facing tables and columns match the Postgres world's, so that the same
-- debugging queries work on both. JSON values are TEXT; timestamps are UTC ISO-8601
-- TEXT with microseconds (one fixed shape, so text order is time order).

CREATE TABLE worldflow_schema (
    version INTEGER NOT NULL
);

CREATE TABLE workflow_runs (
    id            TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    error         TEXT,
    started_at    TEXT,
    completed_at  TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    queue         TEXT NOT NULL DEFAULT 'default',
    dedup_key     TEXT
);
CREATE INDEX workflow_runs_created ON workflow_runs (created_at, id);
CREATE INDEX workflow_runs_status ON workflow_runs (status, created_at, id);
CREATE INDEX workflow_runs_name ON workflow_runs (workflow_name, created_at, id);
CREATE INDEX workflow_runs_started ON workflow_runs (started_at);
-- a dedup key is held only while its run is live; the key is free again once it ends
CREATE UNIQUE INDEX workflow_runs_live_dedup ON workflow_runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');

CREATE TABLE workflow_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_run_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    correlation_id  TEXT,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (workflow_run_id, seq)
);

CREATE TABLE workflow_steps (
    id              TEXT PRIMARY KEY,
    workflow_run_id TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    step_name       TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    input           TEXT,
    output          TEXT,
    error           TEXT,
    started_at      TEXT,
    completed_at    TEXT
);
-- the implicit rowid ends this index, so a run's steps come out in first-start order
CREATE INDEX workflow_steps_run ON workflow_steps (workflow_run_id);

CREATE TABLE workflow_hooks (
    token           TEXT PRIMARY KEY,
    workflow_run_id TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    disposed_at     TEXT
);
CREATE INDEX workflow_hooks_run ON workflow_hooks (workflow_run_id);

CREATE TABLE workflow_streams (
    workflow_run_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    data            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (workflow_run_id, name, idx)
);

-- one row per stream ever written (even with no chunk yet): its length and closed flag
CREATE TABLE workflow_stream_heads (
    workflow_run_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    length          INTEGER NOT NULL DEFAULT 0,
    closed          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_run_id, name)
);

CREATE TABLE workflow_inbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_run_id TEXT NOT NULL,
    kind            TEXT NOT NULL,
    token           TEXT,
    payload         TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX workflow_inbox_run ON workflow_inbox (workflow_run_id);

-- the queue: one job per live run; available_at NULL means "only when input arrives"
CREATE TABLE workflow_jobs (
    run_id           TEXT PRIMARY KEY,
    queue            TEXT NOT NULL DEFAULT 'default',
    available_at     TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workflow_jobs_ready ON workflow_jobs (available_at, created_at, run_id)
    WHERE lease_owner IS NULL AND available_at IS NOT NULL;
CREATE INDEX workflow_jobs_expiry ON workflow_jobs (lease_expires_at, created_at, run_id)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX workflow_jobs_owner ON workflow_jobs (lease_owner)
    WHERE lease_owner IS NOT NULL;

-- named queues' limits, shared by every process using this file
CREATE TABLE workflow_queue_slots (
    queue      TEXT NOT NULL,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (queue, holder)
);
CREATE TABLE workflow_queue_waiters (
    queue         TEXT NOT NULL,
    holder        TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    waiting_since TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (queue, holder)
);
CREATE TABLE workflow_queue_grants (
    id         INTEGER PRIMARY KEY,
    queue      TEXT NOT NULL,
    granted_at TEXT NOT NULL
);
CREATE INDEX workflow_queue_grants_queue ON workflow_queue_grants (queue, granted_at);
