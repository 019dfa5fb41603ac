-- worldflow SQLite schema, version 4.
-- Cron schedules: each tick after last_tick starts one run of workflow_name with input.
-- last_tick moves only by compare-and-set, so that processes sharing the file never
-- start a tick twice.

CREATE TABLE workflow_schedules (
    id TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    catchup TEXT NOT NULL,
    input TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    last_tick TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
