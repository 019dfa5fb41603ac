-- worldflow Postgres schema, version 4.
-- Cron schedules, per app (job_prefix): each tick after last_tick starts one run of
-- workflow_name with input. last_tick moves only by compare-and-set, so that workers
-- sharing the database never start a tick twice.

CREATE TABLE workflow_schedules (
    job_prefix    text NOT NULL,
    id            text NOT NULL,
    workflow_name text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    catchup       text NOT NULL,
    input         jsonb NOT NULL,
    paused        boolean NOT NULL DEFAULT false,
    last_tick     timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (job_prefix, id)
);
