-- The read views. Every read of a job's or a step's state in the repos goes
-- through them (`jobState` / `jobStepState` in src/tables.ts), and SQL
-- readers (dashboards, psql) should read them too: they have the columns the
-- design note lists, with the meaning it gives (a running step shows
-- `running`, its worker and `started_at`).
--
-- The tables hold the model of docs/data-model.md ("lean"): `job` and
-- `job_step` are definitions, written once; what changes is in the live
-- rows (`job_live`, `step_live`: the backlog) while unfinished and in the
-- appended results (`job_result`, `step_result`) once finished. Each view
-- overlays them: the live row, else the result, else the definition.
-- A job of exactly one step has no `job_live` row: it is `running` once its
-- step's live row has a `job_started_at`, else `pending`.
-- A step's route (`step_live.route`): who may claim it. An untagged step's
-- route is its ability alone (so a worker without tags claims by its
-- capabilities, as before routing existed); a tagged step's is the ability
-- and its tags, sorted and distinct, joined by U+001F (tags never hold
-- control characters: the repos refuse them).
-- A list of tags as stored: distinct, in byte order (COLLATE "C": the same
-- on every server, whatever its default collation).
CREATE OR REPLACE FUNCTION stroem_tags(p_tags text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ARRAY(SELECT DISTINCT t COLLATE "C" FROM unnest(coalesce(p_tags, '{}')) t ORDER BY 1)
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION stroem_route(p_ability text, p_tags text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN coalesce(cardinality(p_tags), 0) = 0 THEN p_ability
    ELSE p_ability || E'\x1f' || array_to_string(stroem_tags(p_tags), E'\x1f') END
$$;
--> statement-breakpoint
-- A new step's route: a step with a `when` condition waits first for the
-- server's decision ('@when'), a `for_each` step for its items ('@loop');
-- otherwise (and once the server released it: stroem_decide_condition) the
-- route of its ability and tags. '@…' is no action type, so no worker's
-- capability names it (SERVER_ROUTES in @stroem/schema).
CREATE OR REPLACE FUNCTION stroem_step_route(p_ability text, p_tags text[], p_when text, p_for_each text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN p_when IS NOT NULL THEN '@when' WHEN p_for_each IS NOT NULL THEN '@loop'
    ELSE stroem_route(p_ability, p_tags) END
$$;
--> statement-breakpoint
-- The ability of a route: what `listenForReady` listeners hear (they filter by capability).
CREATE OR REPLACE FUNCTION stroem_route_ability(p_route text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT split_part(p_route, E'\x1f', 1)
$$;
--> statement-breakpoint
CREATE OR REPLACE VIEW job_state AS
SELECT j.job_id, j.workspace, j.task_name, j.mode, j.input,
       CASE WHEN r.job_id IS NOT NULL THEN r.output ELSE l.output END AS output,
       coalesce(r.status, l.status, CASE WHEN sl.job_started_at IS NOT NULL THEN 'running' ELSE 'pending' END) AS status,
       j.source_type, j.source_id,
       CASE WHEN r.job_id IS NOT NULL THEN r.worker_id ELSE l.worker_id END AS worker_id,
       j.revision, j.created_at,
       CASE WHEN r.job_id IS NOT NULL THEN r.started_at WHEN l.job_id IS NOT NULL THEN l.started_at ELSE sl.job_started_at END AS started_at,
       r.completed_at, j.log_path,
       CASE WHEN r.job_id IS NOT NULL THEN r.cancel_reason ELSE l.cancel_reason END AS cancel_reason,
       j.timeout_secs,
       CASE WHEN r.job_id IS NOT NULL THEN r.error_message ELSE l.error_message END AS error_message,
       coalesce(r.steps_unfinished, l.steps_unfinished, CASE WHEN sl.job_id IS NOT NULL THEN 1 ELSE 0 END) AS steps_unfinished,
       coalesce(r.steps_failed, l.steps_failed, 0) AS steps_failed,
       j.source_job_id, j.restart_from_step, j.retry_of_job_id, j.retry_attempt, j.retry_job_id,
       j.parent_job_id, j.parent_step_name
FROM job j
LEFT JOIN job_result r ON r.job_id = j.job_id
LEFT JOIN job_live l ON l.job_id = j.job_id AND r.job_id IS NULL
LEFT JOIN LATERAL (
  SELECT s.job_id, s.job_started_at FROM step_live s
  WHERE s.job_id = j.job_id AND r.job_id IS NULL AND l.job_id IS NULL
  LIMIT 1
) sl ON true;
--> statement-breakpoint
CREATE OR REPLACE VIEW job_step_state AS
SELECT s.job_id, s.step_name, s.action_name, s.action_type, s.action_image, s.action_spec, s.input,
       CASE WHEN l.job_id IS NOT NULL THEN l.output ELSE r.output END AS output,
       coalesce(l.status, r.status, 'pending') AS status,
       CASE WHEN l.job_id IS NOT NULL THEN l.worker_id ELSE r.worker_id END AS worker_id,
       CASE WHEN l.job_id IS NOT NULL THEN l.started_at ELSE r.started_at END AS started_at,
       CASE WHEN l.job_id IS NOT NULL THEN l.completed_at ELSE r.completed_at END AS completed_at,
       CASE WHEN l.job_id IS NOT NULL THEN l.error_message ELSE r.error_message END AS error_message,
       s.depends_on, s.continue_on_failure,
       coalesce(l.attempts, r.attempts, 0) AS attempts,
       coalesce(l.rescues, r.rescues, 0) AS rescues,
       CASE WHEN l.job_id IS NOT NULL THEN l.ready_at ELSE r.ready_at END AS ready_at,
       s.dependants,
       coalesce(l.deps_unfinished, r.deps_unfinished, 0) AS deps_unfinished,
       coalesce(l.deps_failed, r.deps_failed, 0) AS deps_failed,
       coalesce(l.deps_completed, r.deps_completed, 0) AS deps_completed,
       coalesce(l.propagated, r.propagated, false) AS propagated,
       coalesce(l.max_retries, r.max_retries, s.max_retries) AS max_retries,
       s.retry_backoff_secs, s.retry_strategy, s.retry_jitter,
       CASE WHEN l.job_id IS NOT NULL THEN l.cancel_requested_at ELSE r.cancel_requested_at END AS cancel_requested_at,
       s.timeout_secs,
       CASE WHEN l.job_id IS NOT NULL THEN l.suspended_at ELSE r.suspended_at END AS suspended_at,
       coalesce(l.retry_history, r.retry_history, '[]'::jsonb) AS retry_history,
       s.required_ability, s.required_tags,
       s.when_condition, s.for_each, s.loop_source, s.loop_index, s.loop_total, s.loop_item
FROM job_step s
LEFT JOIN step_live l ON l.job_id = s.job_id AND l.step_name = s.step_name
LEFT JOIN step_result r ON r.job_id = s.job_id AND r.step_name = s.step_name AND l.job_id IS NULL;
--> statement-breakpoint
-- A live job row updated to a finished status moves to job_result, with
-- its final state (the statements that finish a job update it; the row
-- goes at the end of that statement). A child job's end ends its parent
-- step in the same statement (stroem_child_ended), unless the parent's own
-- cancel is cancelling it (stroem_cancel_job: the parent step is cancelled
-- with its job).
CREATE OR REPLACE FUNCTION stroem_job_live_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_result (job_id, status, worker_id, started_at, completed_at, output, error_message, cancel_reason,
                          steps_unfinished, steps_failed)
  VALUES (NEW.job_id, NEW.status, NEW.worker_id, NEW.started_at, coalesce(NEW.completed_at, now()), NEW.output,
          NEW.error_message, NEW.cancel_reason, NEW.steps_unfinished, NEW.steps_failed);
  DELETE FROM job_live l WHERE l.job_id = NEW.job_id;
  IF NEW.parent_job_id IS NOT NULL AND coalesce(current_setting('stroem.cascading_cancel', true), '') <> 'on' THEN
    PERFORM stroem_child_ended(NEW.parent_job_id, NEW.parent_step_name, NEW.job_id, NEW.status, NEW.output,
                               coalesce(NEW.error_message, NEW.cancel_reason));
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER job_live_ended AFTER UPDATE OF status ON job_live
FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION stroem_job_live_ended();
--> statement-breakpoint
-- A live step row updated to a finished status moves to step_result once
-- its outcome is applied (propagated) or its job is finished (a late
-- outcome, which moves nothing); a bare mark of an unfinished job stays
-- until `advance` applies it. The hot path's reports delete the row and
-- append the result themselves (no update first).
CREATE OR REPLACE FUNCTION stroem_step_live_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT NEW.propagated AND NOT EXISTS (SELECT 1 FROM job_result r WHERE r.job_id = NEW.job_id) THEN
    RETURN NULL;
  END IF;
  INSERT INTO step_result (job_id, step_name, action_type, status, ready_at, worker_id, started_at, completed_at, output,
                           error_message, attempts, rescues, max_retries, retry_history, deps_total, continue_on_failure,
                           dependants, timeout_secs, deps_unfinished, deps_failed, deps_completed, propagated,
                           cancel_requested_at, suspended_at, job_started_at)
  VALUES (NEW.job_id, NEW.step_name, NEW.action_type, NEW.status, NEW.ready_at, NEW.worker_id, NEW.started_at,
          NEW.completed_at, NEW.output, NEW.error_message, NEW.attempts, NEW.rescues, NEW.max_retries, NEW.retry_history,
          NEW.deps_total, NEW.continue_on_failure, NEW.dependants, NEW.timeout_secs, NEW.deps_unfinished,
          NEW.deps_failed, NEW.deps_completed, NEW.propagated, NEW.cancel_requested_at, NEW.suspended_at,
          NEW.job_started_at);
  DELETE FROM step_live l WHERE l.job_id = NEW.job_id AND l.step_name = NEW.step_name;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER step_live_ended AFTER UPDATE OF status, propagated ON step_live
FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'skipped', 'cancelled'))
EXECUTE FUNCTION stroem_step_live_ended();
--> statement-breakpoint
-- An expanded loop step (route '@instances': it waits for its instances,
-- which list it among their dependants) that advancing decides to move
-- (its last instance finished: 'ready', or 'skipped' after a failure)
-- finishes instead: `completed` with the instances' outputs in index order
-- when none failed, else `failed` naming the failed instances (the outputs
-- kept). It is left unpropagated (a bare mark), and the advancing that
-- moved it applies it in the same call (stroem_apply_outcomes), so its
-- dependants move on. Reads the instances once, when the last one ends.
CREATE OR REPLACE FUNCTION stroem_loop_collected() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_outputs jsonb;
  v_failed text[];
BEGIN
  IF NEW.deps_unfinished > 0 AND NEW.deps_failed = 0 THEN
    -- Not advancing's decision (it moves a waiting step only once its counts
    -- allow): a skip by hand (markSkipped) stays a skip.
    RETURN NEW;
  END IF;
  SELECT coalesce(jsonb_agg(coalesce(r.output, 'null'::jsonb) ORDER BY d.loop_index), '[]'::jsonb),
         coalesce(array_agg(d.step_name ORDER BY d.loop_index) FILTER (WHERE r.status = 'failed'), '{}')
  INTO v_outputs, v_failed
  FROM job_step d LEFT JOIN step_result r ON r.job_id = d.job_id AND r.step_name = d.step_name
  WHERE d.job_id = NEW.job_id AND d.loop_source = NEW.step_name;
  NEW.status := CASE WHEN cardinality(v_failed) > 0 THEN 'failed' ELSE 'completed' END;
  NEW.output := v_outputs;
  NEW.error_message := CASE WHEN cardinality(v_failed) > 0 THEN
    cardinality(v_failed) || ' of ' || NEW.deps_total || ' instances failed: '
      || array_to_string(v_failed[1:20], ', ') || CASE WHEN cardinality(v_failed) > 20 THEN ', ...' ELSE '' END
  END;
  NEW.completed_at := now();
  NEW.ready_at := OLD.ready_at;
  NEW.propagated := false;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER step_live_loop_collected BEFORE UPDATE OF status ON step_live
FOR EACH ROW WHEN (OLD.route = '@instances' AND OLD.status = 'pending' AND NEW.status IN ('ready', 'skipped'))
EXECUTE FUNCTION stroem_loop_collected();
--> statement-breakpoint
-- Deleting jobs (the retention purge, a test's cleanup) deletes their live
-- and result rows: those tables have no foreign key to `job` (the check
-- would lock the job row on the hot path).
CREATE OR REPLACE FUNCTION stroem_job_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM step_live l WHERE l.job_id IN (SELECT g.job_id FROM gone g);
  DELETE FROM step_result r WHERE r.job_id IN (SELECT g.job_id FROM gone g);
  DELETE FROM job_live l WHERE l.job_id IN (SELECT g.job_id FROM gone g);
  DELETE FROM job_result r WHERE r.job_id IN (SELECT g.job_id FROM gone g);
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER job_deleted AFTER DELETE ON job
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION stroem_job_deleted();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION stroem_job_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE step_live, step_result, job_live, job_result;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER job_truncated AFTER TRUNCATE ON job
FOR EACH STATEMENT EXECUTE FUNCTION stroem_job_truncated();
