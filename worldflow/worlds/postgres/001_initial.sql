-- worldflow Postgres schema, version 1. Applied once by `worldflow postgres-setup` or on
-- world start, in one transaction, recorded in worldflow_schema_version.
-- JSON values are `json` (kept byte for byte, and unlike jsonb it takes \u0000).

CREATE TABLE workflow_runs (
    id            text PRIMARY KEY,
    workflow_name text NOT NULL,
    status        text NOT NULL,
    input         json NOT NULL,
    output        json,
    error         json,
    started_at    timestamptz,
    completed_at  timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    queue         text NOT NULL DEFAULT 'default',
    dedup_key     text
);
CREATE INDEX workflow_runs_created ON workflow_runs (created_at DESC, id DESC);
CREATE INDEX workflow_runs_status ON workflow_runs (status, created_at DESC, id DESC);
CREATE INDEX workflow_runs_name ON workflow_runs (workflow_name, created_at DESC, id DESC);
CREATE INDEX workflow_runs_started ON workflow_runs (started_at DESC);
CREATE UNIQUE INDEX workflow_runs_live_dedup ON workflow_runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');

CREATE TABLE workflow_events (
    id              bigserial PRIMARY KEY,
    workflow_run_id text NOT NULL,
    seq             integer NOT NULL,
    event_type      text NOT NULL,
    correlation_id  text,
    payload         json NOT NULL,
    created_at      timestamptz NOT NULL,
    UNIQUE (workflow_run_id, seq)
);

CREATE TABLE workflow_steps (
    id              text PRIMARY KEY,
    workflow_run_id text NOT NULL,
    correlation_id  text NOT NULL,
    step_name       text NOT NULL,
    status          text NOT NULL,
    attempt         integer NOT NULL,
    input           json,
    output          json,
    error           json,
    started_at      timestamptz,
    completed_at    timestamptz,
    position        bigserial
);
CREATE INDEX workflow_steps_run ON workflow_steps (workflow_run_id, position);

CREATE TABLE workflow_hooks (
    token           text PRIMARY KEY,
    workflow_run_id text NOT NULL,
    correlation_id  text NOT NULL,
    status          text NOT NULL,
    created_at      timestamptz NOT NULL,
    disposed_at     timestamptz,
    position        bigserial
);
CREATE INDEX workflow_hooks_run ON workflow_hooks (workflow_run_id, position);

CREATE TABLE workflow_streams (
    workflow_run_id text NOT NULL,
    name            text NOT NULL,
    idx             integer NOT NULL,
    data            json NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (workflow_run_id, name, idx)
);
CREATE TABLE workflow_stream_heads (
    workflow_run_id text NOT NULL,
    name            text NOT NULL,
    length          integer NOT NULL DEFAULT 0,
    closed          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (workflow_run_id, name)
);

CREATE TABLE workflow_inbox (
    id              bigserial PRIMARY KEY,
    workflow_run_id text NOT NULL,
    kind            text NOT NULL,
    token           text,
    payload         json,
    created_at      timestamptz NOT NULL
);
CREATE INDEX workflow_inbox_run ON workflow_inbox (workflow_run_id, id);

-- the queue: one job per live run, per app (job_prefix); available_at NULL: only input
-- wakes it
CREATE TABLE workflow_jobs (
    run_id           text PRIMARY KEY,
    job_prefix       text NOT NULL,
    queue            text NOT NULL DEFAULT 'default',
    available_at     timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL,
    priority         integer NOT NULL DEFAULT 0
);
CREATE INDEX workflow_jobs_ready ON workflow_jobs (job_prefix, available_at, created_at, run_id)
    WHERE lease_owner IS NULL AND available_at IS NOT NULL;
CREATE INDEX workflow_jobs_expiry ON workflow_jobs (job_prefix, lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX workflow_jobs_owner ON workflow_jobs (lease_owner) WHERE lease_owner IS NOT NULL;

-- named queues' limits (queue names carry the job prefix)
CREATE TABLE workflow_queue_slots (
    queue      text NOT NULL,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (queue, holder)
);
CREATE TABLE workflow_queue_waiters (
    queue         text NOT NULL,
    holder        text NOT NULL,
    priority      integer NOT NULL,
    waiting_since timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (queue, holder)
);
CREATE TABLE workflow_queue_grants (
    id         bigserial PRIMARY KEY,
    queue      text NOT NULL,
    granted_at timestamptz NOT NULL
);
CREATE INDEX workflow_queue_grants_queue ON workflow_queue_grants (queue, granted_at);
