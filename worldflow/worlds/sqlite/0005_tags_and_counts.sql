-- worldflow SQLite schema, version 5.
-- Run tags (key=value strings given at start, never changed) and step counters kept on
-- the run row, so that a listing filters by tag through an index and shows step counts
-- without reading each run's steps.

-- the tags as a JSON object (NULL: none), read with the run
ALTER TABLE workflow_runs ADD COLUMN tags TEXT;
-- steps_total counts each step once; pending = total - completed - failed - running
ALTER TABLE workflow_runs ADD COLUMN steps_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN steps_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN steps_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN steps_running INTEGER NOT NULL DEFAULT 0;

-- one row per tag, for filtering: a tag filter walks (key, value) newest first and
-- stops after a page; created_at is the run's, copied so the index holds the order
CREATE TABLE workflow_run_tags (
    workflow_run_id TEXT NOT NULL,
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (workflow_run_id, key)
) WITHOUT ROWID;
CREATE INDEX workflow_run_tags_match
    ON workflow_run_tags (key, value, created_at, workflow_run_id);

-- existing runs: counts from their steps
UPDATE workflow_runs SET
    steps_total = (SELECT count(*) FROM workflow_steps s
                    WHERE s.workflow_run_id = workflow_runs.id),
    steps_completed = (SELECT count(*) FROM workflow_steps s
                        WHERE s.workflow_run_id = workflow_runs.id AND s.status = 'completed'),
    steps_failed = (SELECT count(*) FROM workflow_steps s
                     WHERE s.workflow_run_id = workflow_runs.id AND s.status = 'failed'),
    steps_running = (SELECT count(*) FROM workflow_steps s
                      WHERE s.workflow_run_id = workflow_runs.id AND s.status = 'running')
WHERE id IN (SELECT workflow_run_id FROM workflow_steps);

-- the counters follow the steps table (projection.step_count_changes), whatever writes it
CREATE TRIGGER workflow_steps_counted AFTER INSERT ON workflow_steps BEGIN
    UPDATE workflow_runs SET
        steps_total = steps_total + 1,
        steps_completed = steps_completed + (NEW.status = 'completed'),
        steps_failed = steps_failed + (NEW.status = 'failed'),
        steps_running = steps_running + (NEW.status = 'running')
    WHERE id = NEW.workflow_run_id;
END;
CREATE TRIGGER workflow_steps_recounted AFTER UPDATE OF status ON workflow_steps
WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE workflow_runs SET
        steps_completed = steps_completed + (NEW.status = 'completed')
                          - (OLD.status = 'completed'),
        steps_failed = steps_failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
        steps_running = steps_running + (NEW.status = 'running') - (OLD.status = 'running')
    WHERE id = NEW.workflow_run_id;
END;
CREATE TRIGGER workflow_steps_uncounted AFTER DELETE ON workflow_steps BEGIN
    UPDATE workflow_runs SET
        steps_total = steps_total - 1,
        steps_completed = steps_completed - (OLD.status = 'completed'),
        steps_failed = steps_failed - (OLD.status = 'failed'),
        steps_running = steps_running - (OLD.status = 'running')
    WHERE id = OLD.workflow_run_id;
END;
