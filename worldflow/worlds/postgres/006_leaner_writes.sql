-- worldflow Postgres schema, version 6: fewer index entries per write.
--
-- An event is found by its run and seq, never by a row id: (workflow_run_id, seq), the
-- unique key the fence relies on, becomes the primary key, and the bigserial id (a
-- sequence call and an index entry per event) goes. The key's index is built again
-- once, here.
ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey, DROP COLUMN id;
ALTER TABLE workflow_events
    DROP CONSTRAINT workflow_events_workflow_run_id_seq_key,
    ADD CONSTRAINT workflow_events_pkey PRIMARY KEY (workflow_run_id, seq);

-- no query reads runs by start time; the index cost an entry per run, and another each
-- time a run started
DROP INDEX workflow_runs_started;
