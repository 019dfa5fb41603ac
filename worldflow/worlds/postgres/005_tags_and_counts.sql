-- worldflow Postgres schema, version 5.
-- Run tags (key=value strings given at start, never changed) and step counters kept on
-- the run row, so that a listing filters by tag through an index and shows step counts
-- without reading each run's steps.
--
-- Tags are rows of their own table rather than a jsonb column with a GIN index: a GIN
-- index finds every run with the tag (a bitmap) and the newest-first page is then a
-- sort of all of them, growing with the number of matches; a btree on (key, value,
-- created_at, run id) is walked in listing order and stops after one page, and the
-- keyset cursor (created_at, run id) is a range on the same index.

-- the tags as a JSON object (NULL: none), read with the run
ALTER TABLE workflow_runs ADD COLUMN tags json;
-- steps_total counts each step once; pending = total - completed - failed - running
ALTER TABLE workflow_runs ADD COLUMN steps_total integer NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN steps_completed integer NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN steps_failed integer NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN steps_running integer NOT NULL DEFAULT 0;

CREATE TABLE workflow_run_tags (
    workflow_run_id text NOT NULL,
    key             text NOT NULL,
    value           text NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (workflow_run_id, key)
);
CREATE INDEX workflow_run_tags_match
    ON workflow_run_tags (key, value, created_at DESC, workflow_run_id DESC);

-- existing runs: counts from their steps
UPDATE workflow_runs r SET steps_total = c.total, steps_completed = c.completed,
       steps_failed = c.failed, steps_running = c.running
  FROM (SELECT workflow_run_id, count(*) AS total,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'running') AS running
          FROM workflow_steps GROUP BY workflow_run_id) c
 WHERE r.id = c.workflow_run_id;

-- from here on worldflow_apply (functions.sql) keeps the counters as it applies each
-- append's step ops (projection.step_count_changes): one UPDATE of the run per append,
-- not one per step row as a trigger would do
