-- worldflow Postgres schema, version 7: a run's steps are read from its events.
--
-- The steps table was a projection of the step events (step_started, step_completed,
-- step_retrying, step_failed) written in the same transaction as them: a row and two
-- index entries on every step's commit, for a record the events hold already. It
-- becomes a view of the same name and columns over those events, so that a step's
-- commit writes its events and nothing else, and SQL that reads workflow_steps reads
-- what it read before. Nothing is lost: every row was made from events that stay.
--
-- A step is its events of one correlation id in one run, and its row is read from its
-- first and its latest event, as the table kept it: name, input and started_at from its
-- first (a step's first event is its start), status and attempt from its latest
-- (started: running; retrying: pending; completed; failed), output if its latest is a
-- completion, error if its latest is a retry or a failure (a new start or a completion
-- cleared it), completed_at if its latest is a completion or a failure (nothing follows
-- a step's completion or failure in a log); position (the order of a run's steps): the
-- seq of its first event. One sort of a run's step events finds both. A query that names
-- a run (workflow_run_id = ...) reads that run's events only: the condition is applied
-- below the sort.
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
       worldflow_event_value(s.first_payload, 'step_name') #>> '{}' AS step_name,
       CASE s.last_type WHEN 'step_completed' THEN 'completed'
                        WHEN 'step_failed' THEN 'failed'
                        WHEN 'step_retrying' THEN 'pending'
                        ELSE 'running' END AS status,
       (worldflow_event_value(s.last_payload, 'attempt')::text)::integer AS attempt,
       coalesce(worldflow_event_value(s.first_payload, 'input'), 'null'::json) AS input,
       CASE WHEN s.last_type = 'step_completed'
            THEN worldflow_event_value(s.last_payload, 'output') END AS output,
       CASE WHEN s.last_type IN ('step_retrying', 'step_failed')
            THEN worldflow_event_value(s.last_payload, 'error') END AS error,
       s.started_at,
       CASE WHEN s.last_type IN ('step_completed', 'step_failed') THEN s.last_at
       END AS completed_at,
       s.position
  FROM (SELECT DISTINCT ON (workflow_run_id, correlation_id)
               workflow_run_id,
               correlation_id,
               event_type AS last_type,
               payload AS last_payload,
               created_at AS last_at,
               last_value(payload) OVER latest_first AS first_payload,
               last_value(created_at) OVER latest_first AS started_at,
               last_value(seq::bigint) OVER latest_first AS position
          FROM workflow_events
         WHERE event_type IN ('step_started', 'step_completed', 'step_retrying',
                              'step_failed')
        WINDOW latest_first AS (PARTITION BY workflow_run_id, correlation_id
                                ORDER BY seq DESC ROWS BETWEEN UNBOUNDED PRECEDING
                                                           AND UNBOUNDED FOLLOWING)
         ORDER BY workflow_run_id, correlation_id, seq DESC) AS s;
