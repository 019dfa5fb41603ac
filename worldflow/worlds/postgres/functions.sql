-- The group-commit entry point: one call applies a whole batch of writes from many runs
-- (created runs, appended events with their projection ops) in one round trip. The
-- batch comes in two parts (messages.encode_batch): `writes`, the skeleton, parsed once
-- as jsonb, and `blobs`, the JSON values to store (event payloads, inputs, outputs,
-- errors, hook metadata), which the skeleton names by 1-based index and which are
-- stored byte for byte, parsed only to be validated.
-- Each write runs in its own exception block (a subtransaction), so one write's failure
-- (another worker's seq: lease lost; a token in use) undoes only that write and is
-- reported only to its caller. NOTIFY payloads are messages.py's notices.
-- Re-created on every setup (CREATE OR REPLACE). Databases set up by earlier versions
-- also hold worldflow_apply(json, text), which their processes call during a deploy.

-- The run a create_run finds instead of creating one: the run of that id, or the live
-- run (pending or running) holding its dedup key. NULL: none.
CREATE OR REPLACE FUNCTION worldflow_existing_run(run_id text, dedup_key text) RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(
        (SELECT r.id FROM workflow_runs r WHERE r.id = $1),
        (SELECT r.id FROM workflow_runs r
          WHERE $2 IS NOT NULL AND r.dedup_key = $2 AND r.status IN ('pending', 'running')
          LIMIT 1))
$fn$;

CREATE OR REPLACE FUNCTION worldflow_apply(writes jsonb, blobs text[], channel text)
RETURNS json
LANGUAGE plpgsql AS $fn$
DECLARE
    w jsonb;
    out json[] := '{}';
    write_type text;
    events jsonb;
    first_event jsonb;
    run text;
    last_seq integer;
    first_seq integer;
    op jsonb;
    ops jsonb;
    n_ops integer;
    i integer;
    holder text;
    existing_id text;
BEGIN
    FOR w IN SELECT * FROM jsonb_array_elements(writes) LOOP
        BEGIN
            write_type := w->>'type';
            IF write_type = 'create_run' THEN
                -- worldflow_existing_run's query, inline: a SQL function called here is
                -- planned again on every call (its plan lives only as long as the
                -- subtransaction), while this statement's plan is kept for the session
                SELECT coalesce(
                        (SELECT r.id FROM workflow_runs r WHERE r.id = w->>'run_id'),
                        (SELECT r.id FROM workflow_runs r
                          WHERE w->>'dedup_key' IS NOT NULL AND r.dedup_key = w->>'dedup_key'
                            AND r.status IN ('pending', 'running')
                          LIMIT 1))
                  INTO existing_id;
                IF existing_id IS NOT NULL THEN
                    out := out || json_build_object('ok', true, 'created', false,
                                                    'run_id', existing_id);
                    CONTINUE;
                END IF;
                -- created started (a run its creator runs at once): running, with its
                -- run_started event, so that its start is not a write of its own
                INSERT INTO workflow_runs (id, workflow_name, status, input, created_at,
                                           updated_at, queue, dedup_key, parent_run_id,
                                           tags, started_at)
                VALUES (w->>'run_id', w->>'workflow_name',
                        CASE WHEN w->>'started' IS NULL THEN 'pending' ELSE 'running' END,
                        blobs[(w->>'input')::int]::json,
                        (w->>'created_at')::timestamptz, (w->>'created_at')::timestamptz,
                        w->>'queue', w->>'dedup_key', w->>'parent_run_id',
                        blobs[(w->>'tags')::int]::json,
                        CASE WHEN w->>'started' IS NOT NULL
                             THEN (w->>'created_at')::timestamptz END);
                IF w->>'tags' IS NOT NULL THEN
                    INSERT INTO workflow_run_tags (workflow_run_id, key, value, created_at)
                    SELECT w->>'run_id', t.key, t.value, (w->>'created_at')::timestamptz
                      FROM json_each_text(blobs[(w->>'tags')::int]::json) AS t;
                END IF;
                INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id,
                                             payload, created_at)
                VALUES (w->>'run_id', 0, 'run_created', NULL, blobs[(w->>'payload')::int]::json,
                        (w->>'created_at')::timestamptz);
                IF w->>'started' IS NOT NULL THEN
                    INSERT INTO workflow_events (workflow_run_id, seq, event_type,
                                                 correlation_id, payload, created_at)
                    VALUES (w->>'run_id', 1, 'run_started', NULL,
                            blobs[(w->>'started')::int]::json,
                            (w->>'created_at')::timestamptz);
                END IF;
                INSERT INTO workflow_jobs (run_id, job_prefix, queue, workflow_name,
                                           available_at, lease_owner, lease_expires_at,
                                           created_at)
                VALUES (w->>'run_id', w->>'job_prefix', w->>'queue', w->>'workflow_name',
                        (w->>'now')::timestamptz, w->>'lease_owner',
                        (w->>'lease_expires_at')::timestamptz, (w->>'now')::timestamptz);
                IF w->>'lease_owner' IS NULL THEN
                    PERFORM pg_notify(channel, '{"type":"work"}');
                END IF;
                out := out || json_build_object('ok', true, 'created', true,
                                                'run_id', w->>'run_id');
            ELSIF write_type = 'append' THEN
                run := w->>'run_id';
                events := w->'events';
                SELECT max(seq) INTO last_seq FROM workflow_events WHERE workflow_run_id = run;
                IF last_seq IS NULL THEN
                    out := out || json_build_object('ok', false, 'error', 'not_found',
                                                    'message', 'run not found: ' || run);
                    CONTINUE;
                END IF;
                -- seq fencing (projection.check_fence): the events continue the log
                first_event := events->0;
                first_seq := (first_event->>0)::integer;
                IF first_seq IS NOT NULL AND first_seq <> last_seq + 1 THEN
                    -- the same write again (its commit's outcome was unknown): done already
                    IF first_seq <= last_seq AND EXISTS (
                            SELECT 1 FROM workflow_events
                             WHERE workflow_run_id = run AND seq = first_seq
                               AND created_at = (first_event->>4)::timestamptz
                               AND event_type = first_event->>1) THEN
                        out := out || json_build_object('ok', true);
                        CONTINUE;
                    END IF;
                    out := out || json_build_object('ok', false, 'error', 'lease_lost',
                        'message', format('run %s: event seq %s does not follow %s '
                                          '(already recorded, or an earlier append was lost)',
                                          run, first_seq, last_seq));
                    CONTINUE;
                END IF;
                INSERT INTO workflow_events (workflow_run_id, seq, event_type,
                                             correlation_id, payload, created_at)
                SELECT run, (e->>0)::integer, e->>1, e->>2, blobs[(e->>3)::int]::json,
                       (e->>4)::timestamptz
                  FROM jsonb_array_elements(events) AS e;
                ops := w->'ops';
                n_ops := coalesce(jsonb_array_length(ops), 0);
                i := 0;
                WHILE i < n_ops LOOP
                    op := ops->i;
                    i := i + 1;
                    CASE op->>'type'
                    WHEN 'run_started' THEN
                        UPDATE workflow_runs SET status = 'running',
                               started_at = coalesce(started_at, (op->>'at')::timestamptz),
                               updated_at = (op->>'at')::timestamptz
                         WHERE id = op->>'run_id';
                    WHEN 'run_finished' THEN
                        -- an ended run's step counts are stored (a live run's are
                        -- counted as it is read: sql.run_columns), from its step events
                        -- (this append's are inserted above): each step's status is its
                        -- latest step event's, as the workflow_steps view says it
                        UPDATE workflow_runs SET status = op->>'status',
                               output = blobs[(op->>'output')::int]::json,
                               error = blobs[(op->>'error')::int]::json,
                               completed_at = (op->>'at')::timestamptz,
                               updated_at = (op->>'at')::timestamptz,
                               (steps_total, steps_completed, steps_failed, steps_running) = (
                                   SELECT count(*),
                                          count(*) FILTER (WHERE t = 'step_completed'),
                                          count(*) FILTER (WHERE t = 'step_failed'),
                                          count(*) FILTER (WHERE t = 'step_started')
                                     FROM (SELECT DISTINCT ON (correlation_id)
                                                  event_type AS t
                                             FROM workflow_events
                                            WHERE workflow_run_id = op->>'run_id'
                                              AND event_type IN ('step_started',
                                                  'step_completed', 'step_retrying',
                                                  'step_failed')
                                            ORDER BY correlation_id, seq DESC) AS s)
                         WHERE id = op->>'run_id';
                    WHEN 'step_started', 'step_completed', 'step_retrying',
                         'step_failed' THEN
                        -- (sent by earlier versions only: a step is its events)
                        NULL;
                    WHEN 'hook_created' THEN
                        INSERT INTO workflow_hooks (token, workflow_run_id, correlation_id,
                               status, created_at, metadata)
                        VALUES (op->>'token', op->>'run_id', op->>'correlation_id', 'active',
                                (op->>'at')::timestamptz, blobs[(op->>'metadata')::int]::json)
                        ON CONFLICT (token) DO UPDATE SET
                               workflow_run_id = excluded.workflow_run_id,
                               correlation_id = excluded.correlation_id, status = 'active',
                               created_at = excluded.created_at, disposed_at = NULL,
                               metadata = excluded.metadata
                         -- a disposed hook's token is free again; a live one is not, also
                         -- when another process commits it while this insert waits on it
                         WHERE workflow_hooks.status <> 'active';
                        IF NOT FOUND THEN
                            SELECT workflow_run_id INTO holder FROM workflow_hooks
                             WHERE token = op->>'token';
                            RAISE EXCEPTION USING ERRCODE = 'WF001',
                                MESSAGE = format('hook token %L is already in use by run %s',
                                                 op->>'token', holder);
                        END IF;
                    WHEN 'hook_disposed' THEN
                        UPDATE workflow_hooks SET status = 'disposed',
                               disposed_at = (op->>'at')::timestamptz
                         WHERE token = op->>'token' AND status = 'active';
                    END CASE;
                END LOOP;
                IF w->>'finished_at' IS NOT NULL THEN
                    -- end of run (projection.plan_append): job, inbox and live hooks go
                    DELETE FROM workflow_jobs WHERE run_id = run;
                    DELETE FROM workflow_inbox WHERE workflow_run_id = run;
                    UPDATE workflow_hooks
                       SET status = 'disposed', disposed_at = (w->>'finished_at')::timestamptz
                     WHERE workflow_run_id = run AND status = 'active';
                    PERFORM pg_notify(channel, json_build_object(
                        'type', 'run_ended', 'run_id', run)::text);
                ELSIF jsonb_array_length(w->'inbox_ids') > 0 THEN
                    DELETE FROM workflow_inbox
                     WHERE workflow_run_id = run
                       AND id IN (SELECT value::bigint
                                    FROM jsonb_array_elements_text(w->'inbox_ids'));
                    -- a consumed cancel no longer lets workers without the code claim it
                    UPDATE workflow_jobs SET cancel_pending = EXISTS (
                        SELECT 1 FROM workflow_inbox
                         WHERE workflow_run_id = run AND kind = 'cancel')
                     WHERE run_id = run;
                END IF;
                out := out || json_build_object('ok', true);
            END IF;
        EXCEPTION
            WHEN unique_violation THEN
                IF write_type = 'create_run' THEN
                    -- another process created the same run (same id or live dedup key)
                    -- between our look and our insert, and has committed: like a run
                    -- found at first look, it is returned, not an error
                    existing_id := worldflow_existing_run(w->>'run_id', w->>'dedup_key');
                    IF existing_id IS NOT NULL THEN
                        out := out || json_build_object('ok', true, 'created', false,
                                                        'run_id', existing_id);
                        CONTINUE;
                    END IF;
                END IF;
                out := out || json_build_object('ok', false, 'error', 'lease_lost',
                    'message', format('run %s: event seq already recorded (%s)',
                                      w->>'run_id', SQLERRM));
            WHEN SQLSTATE 'WF001' THEN
                out := out || json_build_object('ok', false, 'error', 'hook_conflict',
                                                'message', SQLERRM);
        END;
    END LOOP;
    RETURN array_to_json(out);
END
$fn$;

-- A batch of plain writes applied set-wise: each statement below takes every write of
-- the batch at once, where worldflow_apply takes them one by one (a subtransaction and
-- four to ten statements each). Plain: created runs, and appends of runs that appear
-- once in the batch, whose ops are run starts and ends and steps' (a step is its events:
-- nothing else is written for it), with no inbox to consume (writer.plain_batch
-- decides; each rule is checked again here). It applies the batch only if every write
-- goes as planned: every run is new and every append continues its run's log. Anything
-- else (a run that exists, a lost lease, a unique violation from a racing writer)
-- undoes all of it, and worldflow_apply takes the batch and reports each write's own
-- outcome.
CREATE OR REPLACE FUNCTION worldflow_apply_plain(writes jsonb, blobs text[], channel text)
RETURNS json
LANGUAGE plpgsql AS $fn$
DECLARE
    n_creates integer;
    n_appends integer;
    n_runs integer;
    n_ops integer;
    n_plain integer;
    n integer;
BEGIN
    SELECT count(*) FILTER (WHERE w->>'type' = 'create_run'),
           count(*) FILTER (WHERE w->>'type' = 'append'),
           count(DISTINCT w->>'run_id'),
           count(*) FILTER (WHERE w->>'type' = 'append'
                              AND jsonb_array_length(w->'inbox_ids') = 0)
      INTO n_creates, n_appends, n_runs, n_plain
      FROM jsonb_array_elements(writes) AS w;
    IF n_runs <> n_creates + n_appends OR n_plain <> n_appends THEN
        RETURN worldflow_apply(writes, blobs, channel);
    END IF;
    SELECT count(*), count(*) FILTER (WHERE op->>'type' IN ('run_started', 'run_finished',
                                                          'step_started', 'step_completed',
                                                          'step_retrying', 'step_failed'))
      INTO n_ops, n_plain
      FROM jsonb_array_elements(writes) AS w, jsonb_array_elements(w->'ops') AS op
     WHERE w->>'type' = 'append';
    IF n_plain <> n_ops THEN
        RETURN worldflow_apply(writes, blobs, channel);
    END IF;
    BEGIN
        -- created runs: all of them new
        IF n_creates > 0 THEN
            -- a run of that id, or a live one of that dedup key, is a unique violation
            INSERT INTO workflow_runs (id, workflow_name, status, input, created_at,
                                       updated_at, queue, dedup_key, parent_run_id, tags,
                                       started_at)
            SELECT w->>'run_id', w->>'workflow_name',
                   CASE WHEN w->>'started' IS NULL THEN 'pending' ELSE 'running' END,
                   blobs[(w->>'input')::int]::json, (w->>'created_at')::timestamptz,
                   (w->>'created_at')::timestamptz, w->>'queue', w->>'dedup_key',
                   w->>'parent_run_id', blobs[(w->>'tags')::int]::json,
                   CASE WHEN w->>'started' IS NOT NULL
                        THEN (w->>'created_at')::timestamptz END
              FROM jsonb_array_elements(writes) AS w
             WHERE w->>'type' = 'create_run';
            INSERT INTO workflow_run_tags (workflow_run_id, key, value, created_at)
            SELECT w->>'run_id', t.key, t.value, (w->>'created_at')::timestamptz
              FROM jsonb_array_elements(writes) AS w,
                   json_each_text(blobs[(w->>'tags')::int]::json) AS t
             WHERE w->>'type' = 'create_run' AND w->>'tags' IS NOT NULL;
            INSERT INTO workflow_jobs (run_id, job_prefix, queue, workflow_name,
                                       available_at, lease_owner, lease_expires_at,
                                       created_at)
            SELECT w->>'run_id', w->>'job_prefix', w->>'queue', w->>'workflow_name',
                   (w->>'now')::timestamptz, w->>'lease_owner',
                   (w->>'lease_expires_at')::timestamptz, (w->>'now')::timestamptz
              FROM jsonb_array_elements(writes) AS w
             WHERE w->>'type' = 'create_run';
            IF EXISTS (SELECT 1 FROM jsonb_array_elements(writes) AS w
                        WHERE w->>'type' = 'create_run' AND w->>'lease_owner' IS NULL) THEN
                PERFORM pg_notify(channel, '{"type":"work"}');
            END IF;
        END IF;
        IF n_appends > 0 THEN
            -- seq fencing (projection.check_fence): each append continues its run's log
            SELECT count(*) INTO n
              FROM jsonb_array_elements(writes) AS w
             WHERE w->>'type' = 'append'
               AND (SELECT max(e.seq) FROM workflow_events e
                     WHERE e.workflow_run_id = w->>'run_id')
                   = (w->'events'->0->>0)::integer - 1;
            IF n <> n_appends THEN
                RAISE EXCEPTION USING ERRCODE = 'WF002', MESSAGE = 'a fence does not hold';
            END IF;
        END IF;
        -- the events: the created runs' run_created (and run_started, created started),
        -- the appends' events
        INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id,
                                     payload, created_at)
        SELECT w->>'run_id', 0, 'run_created', NULL, blobs[(w->>'payload')::int]::json,
               (w->>'created_at')::timestamptz
          FROM jsonb_array_elements(writes) AS w
         WHERE w->>'type' = 'create_run'
        UNION ALL
        SELECT w->>'run_id', 1, 'run_started', NULL, blobs[(w->>'started')::int]::json,
               (w->>'created_at')::timestamptz
          FROM jsonb_array_elements(writes) AS w
         WHERE w->>'type' = 'create_run' AND w->>'started' IS NOT NULL
        UNION ALL
        SELECT w->>'run_id', (e->>0)::integer, e->>1, e->>2, blobs[(e->>3)::int]::json,
               (e->>4)::timestamptz
          FROM jsonb_array_elements(writes) AS w, jsonb_array_elements(w->'events') AS e
         WHERE w->>'type' = 'append';
        IF n_appends = 0 THEN
            RETURN (SELECT json_agg(json_build_object('ok', true, 'created', true,
                                                      'run_id', w->>'run_id') ORDER BY i)
                      FROM jsonb_array_elements(writes) WITH ORDINALITY AS x(w, i));
        END IF;
        -- runs started and ended: one update each (an ended run's step counts stored)
        UPDATE workflow_runs r
           SET status = coalesce(u.ended->>'status', 'running'),
               started_at = CASE WHEN u.started IS NULL THEN r.started_at
                                 ELSE coalesce(r.started_at, (u.started->>'at')::timestamptz)
                            END,
               updated_at = coalesce(u.ended->>'at', u.started->>'at')::timestamptz,
               output = CASE WHEN u.ended IS NULL THEN r.output
                             ELSE blobs[(u.ended->>'output')::int]::json END,
               error = CASE WHEN u.ended IS NULL THEN r.error
                            ELSE blobs[(u.ended->>'error')::int]::json END,
               completed_at = CASE WHEN u.ended IS NULL THEN r.completed_at
                                   ELSE (u.ended->>'at')::timestamptz END,
               steps_total = coalesce(c.total, r.steps_total),
               steps_completed = coalesce(c.completed, r.steps_completed),
               steps_failed = coalesce(c.failed, r.steps_failed),
               steps_running = coalesce(c.running, r.steps_running)
          FROM (SELECT w->>'run_id' AS id, o.started, o.ended
                  FROM jsonb_array_elements(writes) AS w,
                       LATERAL (SELECT (array_agg(op) FILTER (
                                           WHERE op->>'type' = 'run_started'))[1] AS started,
                                       (array_agg(op) FILTER (
                                           WHERE op->>'type' = 'run_finished'))[1] AS ended
                                  FROM jsonb_array_elements(w->'ops') AS op) AS o
                 WHERE w->>'type' = 'append'
                   AND (o.started IS NOT NULL OR o.ended IS NOT NULL)) AS u
               LEFT JOIN LATERAL (
                   -- from its step events, as worldflow_apply counts them
                   SELECT count(*) AS total,
                          count(*) FILTER (WHERE t = 'step_completed') AS completed,
                          count(*) FILTER (WHERE t = 'step_failed') AS failed,
                          count(*) FILTER (WHERE t = 'step_started') AS running
                     FROM (SELECT DISTINCT ON (e.correlation_id) e.event_type AS t
                             FROM workflow_events e
                            WHERE u.ended IS NOT NULL AND e.workflow_run_id = u.id
                              AND e.event_type IN ('step_started', 'step_completed',
                                                   'step_retrying', 'step_failed')
                            ORDER BY e.correlation_id, e.seq DESC) AS s
                   HAVING u.ended IS NOT NULL) AS c ON true
         WHERE r.id = u.id;
        -- ended runs (projection.plan_append): job, inbox and live hooks go
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(writes) AS w
                    WHERE w->>'type' = 'append' AND w->>'finished_at' IS NOT NULL) THEN
            DELETE FROM workflow_jobs j USING jsonb_array_elements(writes) AS w
             WHERE w->>'type' = 'append' AND w->>'finished_at' IS NOT NULL
               AND j.run_id = w->>'run_id';
            DELETE FROM workflow_inbox i USING jsonb_array_elements(writes) AS w
             WHERE w->>'type' = 'append' AND w->>'finished_at' IS NOT NULL
               AND i.workflow_run_id = w->>'run_id';
            UPDATE workflow_hooks h
               SET status = 'disposed', disposed_at = (w->>'finished_at')::timestamptz
              FROM jsonb_array_elements(writes) AS w
             WHERE w->>'type' = 'append' AND w->>'finished_at' IS NOT NULL
               AND h.workflow_run_id = w->>'run_id' AND h.status = 'active';
            PERFORM pg_notify(channel, json_build_object('type', 'run_ended',
                                                         'run_id', w->>'run_id')::text)
               FROM jsonb_array_elements(writes) AS w
              WHERE w->>'type' = 'append' AND w->>'finished_at' IS NOT NULL;
        END IF;
        RETURN (SELECT json_agg(CASE WHEN w->>'type' = 'create_run'
                                     THEN json_build_object('ok', true, 'created', true,
                                                            'run_id', w->>'run_id')
                                     ELSE json_build_object('ok', true) END ORDER BY i)
                  FROM jsonb_array_elements(writes) WITH ORDINALITY AS x(w, i));
    EXCEPTION
        WHEN SQLSTATE 'WF002' OR unique_violation OR not_null_violation
             OR foreign_key_violation OR check_violation THEN
            -- undone; each write on its own, with its own outcome
            RETURN worldflow_apply(writes, blobs, channel);
    END;
END
$fn$;
