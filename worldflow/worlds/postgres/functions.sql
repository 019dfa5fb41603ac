-- The group-commit entry point: one call applies a whole batch of writes from many runs
-- (created runs, appended events with their projections) in one round trip. Each write
-- runs in its own exception block (a subtransaction), so one write's failure (another
-- worker's seq: lease lost; a token in use) undoes only that write and is reported
-- only to its caller. Re-created on every setup (CREATE OR REPLACE).
CREATE OR REPLACE FUNCTION worldflow_apply(writes json, channel text) RETURNS json
LANGUAGE plpgsql AS $fn$
DECLARE
    w json;
    out json[] := '{}';
    last_seq integer;
    first_seq integer;
    ev json;
    op json;
    a json;
    holder text;
    existing workflow_runs%ROWTYPE;
    finished boolean;
    fin_at timestamptz;
BEGIN
    FOR w IN SELECT * FROM json_array_elements(writes) LOOP
        BEGIN
            IF w->>'k' = 'c' THEN
                SELECT * INTO existing FROM workflow_runs WHERE id = w->>'id';
                IF NOT FOUND AND w->>'dedup' IS NOT NULL THEN
                    SELECT * INTO existing FROM workflow_runs
                     WHERE dedup_key = w->>'dedup' AND status IN ('pending', 'running');
                END IF;
                IF FOUND THEN
                    out := out || json_build_object('ok', true, 'created', false,
                                                    'id', existing.id);
                    CONTINUE;
                END IF;
                INSERT INTO workflow_runs (id, workflow_name, status, input, created_at,
                                           updated_at, queue, dedup_key)
                VALUES (w->>'id', w->>'wf', 'pending', (w->>'input')::json,
                        (w->>'at')::timestamptz, (w->>'at')::timestamptz, w->>'queue',
                        w->>'dedup');
                INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id,
                                             payload, created_at)
                VALUES (w->>'id', 0, 'run_created', NULL, (w->>'payload')::json,
                        (w->>'at')::timestamptz);
                INSERT INTO workflow_jobs (run_id, job_prefix, queue, available_at,
                                           lease_owner, lease_expires_at, created_at)
                VALUES (w->>'id', w->>'prefix', w->>'queue', (w->>'now')::timestamptz,
                        w->>'owner', (w->>'expires')::timestamptz, (w->>'now')::timestamptz);
                IF w->>'owner' IS NULL THEN
                    PERFORM pg_notify(channel, 'w');
                END IF;
                out := out || json_build_object('ok', true, 'created', true, 'id', w->>'id');
            ELSIF w->>'k' = 'a' THEN
                SELECT max(seq) INTO last_seq FROM workflow_events
                 WHERE workflow_run_id = w->>'run';
                IF last_seq IS NULL THEN
                    out := out || json_build_object('ok', false, 'e', 'not_found',
                                                    'm', 'run not found: ' || (w->>'run'));
                    CONTINUE;
                END IF;
                first_seq := (w->'ev'->0->>0)::integer;
                IF first_seq IS NOT NULL AND first_seq <= last_seq THEN
                    -- the same write again (its commit's outcome was unknown): done already
                    IF EXISTS (SELECT 1 FROM workflow_events
                                WHERE workflow_run_id = w->>'run' AND seq = first_seq
                                  AND created_at = (w->'ev'->0->>4)::timestamptz
                                  AND event_type = w->'ev'->0->>1) THEN
                        out := out || json_build_object('ok', true, 'fin', false);
                        CONTINUE;
                    END IF;
                    out := out || json_build_object('ok', false, 'e', 'lease_lost',
                        'm', format('run %s: event seq %s already recorded', w->>'run',
                                    first_seq));
                    CONTINUE;
                END IF;
                finished := false;
                FOR ev IN SELECT * FROM json_array_elements(w->'ev') LOOP
                    INSERT INTO workflow_events (workflow_run_id, seq, event_type,
                                                 correlation_id, payload, created_at)
                    VALUES (w->>'run', (ev->>0)::integer, ev->>1, ev->>2, (ev->>3)::json,
                            (ev->>4)::timestamptz);
                    IF ev->>1 IN ('run_completed', 'run_failed', 'run_cancelled') THEN
                        finished := true;
                        fin_at := (ev->>4)::timestamptz;
                    END IF;
                END LOOP;
                FOR op IN SELECT * FROM json_array_elements(w->'ops') LOOP
                    a := op->1;
                    CASE op->>0
                    WHEN 'run_started' THEN
                        UPDATE workflow_runs SET status = 'running',
                               started_at = coalesce(started_at, (a->>1)::timestamptz),
                               updated_at = (a->>1)::timestamptz
                         WHERE id = a->>0;
                    WHEN 'run_finished' THEN
                        UPDATE workflow_runs SET status = a->>1, output = (a->>2)::json,
                               error = (a->>3)::json, completed_at = (a->>4)::timestamptz,
                               updated_at = (a->>4)::timestamptz
                         WHERE id = a->>0;
                    WHEN 'step_started' THEN
                        INSERT INTO workflow_steps (id, workflow_run_id, correlation_id,
                               step_name, status, attempt, input, started_at)
                        VALUES (a->>0, a->>1, a->>2, a->>3, 'running', (a->>4)::integer,
                                (a->>5)::json, (a->>6)::timestamptz)
                        ON CONFLICT (id) DO UPDATE SET status = 'running',
                               attempt = excluded.attempt, error = NULL;
                    WHEN 'step_completed' THEN
                        UPDATE workflow_steps SET status = 'completed',
                               attempt = (a->>1)::integer, output = (a->>2)::json,
                               error = NULL, completed_at = (a->>3)::timestamptz
                         WHERE id = a->>0;
                    WHEN 'step_retrying' THEN
                        UPDATE workflow_steps SET status = 'pending',
                               attempt = (a->>1)::integer, error = (a->>2)::json
                         WHERE id = a->>0;
                    WHEN 'step_failed' THEN
                        UPDATE workflow_steps SET status = 'failed',
                               attempt = (a->>1)::integer, error = (a->>2)::json,
                               completed_at = (a->>3)::timestamptz
                         WHERE id = a->>0;
                    WHEN 'hook_created' THEN
                        SELECT workflow_run_id INTO holder FROM workflow_hooks
                         WHERE token = a->>0 AND status = 'active';
                        IF FOUND THEN
                            RAISE EXCEPTION USING ERRCODE = 'WF001',
                                MESSAGE = format('hook token %L is already in use by run %s',
                                                 a->>0, holder);
                        END IF;
                        INSERT INTO workflow_hooks (token, workflow_run_id, correlation_id,
                               status, created_at)
                        VALUES (a->>0, a->>1, a->>2, 'active', (a->>3)::timestamptz)
                        ON CONFLICT (token) DO UPDATE SET
                               workflow_run_id = excluded.workflow_run_id,
                               correlation_id = excluded.correlation_id, status = 'active',
                               created_at = excluded.created_at, disposed_at = NULL;
                    WHEN 'hook_disposed' THEN
                        UPDATE workflow_hooks SET status = 'disposed',
                               disposed_at = (a->>1)::timestamptz
                         WHERE token = a->>0 AND status = 'active';
                    END CASE;
                END LOOP;
                IF json_array_length(w->'inbox') > 0 THEN
                    DELETE FROM workflow_inbox
                     WHERE workflow_run_id = w->>'run'
                       AND id IN (SELECT value::bigint
                                    FROM json_array_elements_text(w->'inbox'));
                END IF;
                IF finished THEN
                    DELETE FROM workflow_jobs WHERE run_id = w->>'run';
                    DELETE FROM workflow_inbox WHERE workflow_run_id = w->>'run';
                    UPDATE workflow_hooks SET status = 'disposed', disposed_at = fin_at
                     WHERE workflow_run_id = w->>'run' AND status = 'active';
                    PERFORM pg_notify(channel, 'f:' || (w->>'run'));
                END IF;
                out := out || json_build_object('ok', true, 'fin', finished);
            END IF;
        EXCEPTION
            WHEN unique_violation THEN
                out := out || json_build_object('ok', false, 'e', 'lease_lost',
                    'm', format('run %s: event seq already recorded (%s)', w->>'run', SQLERRM));
            WHEN SQLSTATE 'WF001' THEN
                out := out || json_build_object('ok', false, 'e', 'hook_conflict',
                                                'm', SQLERRM);
        END;
    END LOOP;
    RETURN array_to_json(out);
END
$fn$;
