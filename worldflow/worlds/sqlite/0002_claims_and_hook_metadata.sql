-- worldflow SQLite schema, version 2.
-- Jobs carry their run's workflow name, so that a worker claims only runs it has the
-- code of (by index), plus two flags of the queue: `backoff` (released after a failure:
-- hook payloads do not wake it, a cancel does) and `cancel_pending` (a cancel waits in
-- the inbox: any worker may claim the run). Hooks keep the metadata of hook_created.

ALTER TABLE workflow_jobs ADD COLUMN workflow_name TEXT;
UPDATE workflow_jobs SET workflow_name = (
    SELECT r.workflow_name FROM workflow_runs r WHERE r.id = workflow_jobs.run_id);
ALTER TABLE workflow_jobs ADD COLUMN backoff INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_jobs ADD COLUMN cancel_pending INTEGER NOT NULL DEFAULT 0;
UPDATE workflow_jobs SET cancel_pending = 1 WHERE EXISTS (
    SELECT 1 FROM workflow_inbox i
     WHERE i.workflow_run_id = workflow_jobs.run_id AND i.kind = 'cancel');
CREATE INDEX workflow_jobs_ready_by_name
    ON workflow_jobs (workflow_name, available_at, created_at, run_id)
    WHERE lease_owner IS NULL AND available_at IS NOT NULL;
CREATE INDEX workflow_jobs_cancel ON workflow_jobs (available_at, created_at, run_id)
    WHERE cancel_pending = 1;

ALTER TABLE workflow_hooks ADD COLUMN metadata TEXT;
