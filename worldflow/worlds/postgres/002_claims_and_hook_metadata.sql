-- worldflow Postgres schema, version 2.
-- Jobs carry their run's workflow name, so that a worker claims only runs it has the
-- code of (by index), plus two flags of the queue: `backoff` (released after a failure:
-- hook payloads do not wake it, a cancel does) and `cancel_pending` (a cancel waits in
-- the inbox: any worker may claim the run). Hooks keep the metadata of hook_created.

ALTER TABLE workflow_jobs ADD COLUMN workflow_name text;
UPDATE workflow_jobs j SET workflow_name = r.workflow_name
  FROM workflow_runs r WHERE r.id = j.run_id;
ALTER TABLE workflow_jobs ADD COLUMN backoff boolean NOT NULL DEFAULT false;
ALTER TABLE workflow_jobs ADD COLUMN cancel_pending boolean NOT NULL DEFAULT false;
UPDATE workflow_jobs j SET cancel_pending = true WHERE EXISTS (
    SELECT 1 FROM workflow_inbox i WHERE i.workflow_run_id = j.run_id AND i.kind = 'cancel');
CREATE INDEX workflow_jobs_ready_by_name
    ON workflow_jobs (job_prefix, workflow_name, available_at, created_at, run_id)
    WHERE lease_owner IS NULL AND available_at IS NOT NULL;
CREATE INDEX workflow_jobs_cancel ON workflow_jobs (job_prefix, available_at)
    WHERE cancel_pending;

ALTER TABLE workflow_hooks ADD COLUMN metadata json;
