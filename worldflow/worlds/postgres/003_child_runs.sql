-- worldflow Postgres schema, version 3.
-- A run started by another run's workflow (a child) names its parent.

ALTER TABLE workflow_runs ADD COLUMN parent_run_id text;
CREATE INDEX workflow_runs_parent ON workflow_runs (parent_run_id)
    WHERE parent_run_id IS NOT NULL;
