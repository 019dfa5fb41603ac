-- worldflow Postgres schema, version 7: a run's steps are read from its events.
--
-- The steps table was a projection of the step events (step_started, step_completed,
-- step_retrying, step_failed) written in the same transaction as them: a row and two
-- index entries on every step's commit, for a record the events hold already. It
-- becomes a view of the same name and columns over those events, so that a step's
-- commit writes its events and nothing else, and SQL that reads workflow_steps reads
-- what it read before. Nothing is lost: every row was made from events that stay.
--
-- A step is its events of one correlation id in one run. Its row, as the table kept it:
-- status from its latest event (started: running; retrying: pending; completed,
-- failed); attempt from its latest event; name, input and started_at from its first
-- start; output from its latest completion; error from its latest event if that is a
-- retry or a failure (a new start or a completion cleared it); completed_at from its
-- latest completion or failure; position (the order of a run's steps): the seq of its
-- first event. A query that names a run (workflow_run_id = ...) reads that run's
-- events only: the condition is applied before the grouping.
DROP TABLE workflow_steps;

-- One field of an event's payload, as the JSON text it was written as. Postgres's json
-- functions refuse a document that holds an escaped NUL (\u0000) anywhere, which the
-- json type stores; for such a payload the field is found in a copy with each \u0000
-- made \u0001 (as long, so the field is where it was) and cut from the payload itself.
-- (The fields read here are never an event's first, and no nested value comes before
-- them: `,"field":` is where the field starts.)
CREATE FUNCTION worldflow_event_value(payload json, field text) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN strpos(payload::text, E'\\u0000') = 0 THEN payload -> field
           ELSE substr(payload::text,
                       strpos(payload::text, ',"' || field || '":') + length(field) + 4,
                       length((replace(payload::text, E'\\u0000', E'\\u0001')::json
                               -> field)::text))::json
           END
$fn$;

CREATE VIEW workflow_steps AS
SELECT s.workflow_run_id || ':' || s.correlation_id AS id,
       s.workflow_run_id,
       s.correlation_id,
       s.step_name,
       CASE s.last_type WHEN 'step_completed' THEN 'completed'
                        WHEN 'step_failed' THEN 'failed'
                        WHEN 'step_retrying' THEN 'pending'
                        ELSE 'running' END AS status,
       s.attempt,
       s.input,
       s.output,
       CASE WHEN s.last_type IN ('step_retrying', 'step_failed') THEN s.last_error
       END AS error,
       s.started_at,
       s.completed_at,
       s.position
  FROM (SELECT workflow_run_id,
               correlation_id,
               min(seq)::bigint AS position,
               min(worldflow_event_value(payload, 'step_name') #>> '{}') AS step_name,
               min(created_at) FILTER (WHERE event_type = 'step_started') AS started_at,
               (array_agg(coalesce(worldflow_event_value(payload, 'input'), 'null'::json)
                          ORDER BY seq) FILTER (WHERE event_type = 'step_started'))[1]
                   AS input,
               (array_agg(event_type ORDER BY seq DESC))[1] AS last_type,
               (array_agg((worldflow_event_value(payload, 'attempt')::text)::integer
                          ORDER BY seq DESC))[1] AS attempt,
               (array_agg(worldflow_event_value(payload, 'output') ORDER BY seq DESC)
                    FILTER (WHERE event_type = 'step_completed'))[1] AS output,
               (array_agg(worldflow_event_value(payload, 'error') ORDER BY seq DESC))[1]
                   AS last_error,
               (array_agg(created_at ORDER BY seq DESC)
                    FILTER (WHERE event_type IN ('step_completed', 'step_failed')))[1]
                   AS completed_at
          FROM workflow_events
         WHERE event_type IN ('step_started', 'step_completed', 'step_retrying',
                              'step_failed')
         GROUP BY workflow_run_id, correlation_id) AS s;
