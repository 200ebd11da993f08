-- A report of one step (complete, fail, the bare marks, a rescue's failure).
-- Locks the job first (its job_live row; a job of one step has none: the
-- step's own live row is the job's lock), then marks the step. Guarded
-- (p_worker_id and p_attempt given), the step must be running in that claim;
-- a report whose claim the row no longer holds (rescued, retried, claimed
-- again, never claimed by it) is `not_owner` in every status. Unguarded (the
-- server finishing a step no worker runs), any non-terminal step is
-- accepted: pending, ready, running or suspended (an approval gate; see
-- 45_gates.sql).
-- A failure with retries left goes back to `ready` (stroem_retry_at, a
-- retry_history entry). Otherwise the step's live row is deleted and its
-- final state appended to step_result (a bare mark of an unfinished job,
-- p_propagate false, stays live until an advance applies it). With
-- p_propagate, the outcome is applied: a job of one step gets its
-- job_result row; a step nothing depends on settles its job with one UPDATE
-- of its job_live row (the arithmetic of stroem_settle_jobs); the first
-- level of dependants is updated inline (one UPDATE of the pending
-- dependants); a skip that cascades, and a job whose bare marks wait, go
-- through stroem_apply_outcomes. A finished job records a late outcome and
-- moves nothing. `result`: ok | repeated | not_found | invalid_transition |
-- not_owner, with the step's status, worker and attempts for the refusals.
CREATE OR REPLACE FUNCTION stroem_finish_step(
  p_job_id uuid, p_step_name text, p_outcome text, p_output jsonb, p_error text,
  p_worker_id uuid, p_attempt integer, p_propagate boolean,
  OUT result text, OUT promoted text[], OUT skipped text[], OUT job_status text,
  OUT step_status text, OUT step_worker_id uuid, OUT step_attempts integer,
  OUT retried boolean, OUT retry_at timestamptz)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  v_job_status text;
  v_single boolean;
  v_finished_job boolean;
  v_propagate boolean;
  v_dependants text[];
  v_continue boolean;
  v_applied record;
  v_step record;
  v_history jsonb;
  v_found boolean;
  v_failed integer;
  v_finished integer;
  v_next text[];
  v_types text[];
  v_job_started timestamptz;
  v_collected boolean;
BEGIN
  promoted := '{}';
  skipped := '{}';
  retried := false;
  -- The job's lock (stroem_lock_job, inlined: this is the commonest path).
  v_single := false;
  SELECT l.status INTO v_job_status FROM job_live l WHERE l.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    -- A job of one step (its step's row is the lock), or a finished job.
    PERFORM 1 FROM step_live s WHERE s.job_id = p_job_id AND s.step_name = p_step_name FOR NO KEY UPDATE;
    v_found := FOUND;
    SELECT r.status INTO v_job_status FROM job_result r WHERE r.job_id = p_job_id;
    IF NOT FOUND THEN
      IF NOT v_found THEN
        PERFORM 1 FROM job j WHERE j.job_id = p_job_id;
        IF NOT FOUND THEN
          result := 'not_found';
          RETURN;
        END IF;
      END IF;
      v_single := true;
      v_job_status := 'running';
    END IF;
  END IF;
  job_status := v_job_status;
  v_finished_job := v_job_status IN ('completed', 'failed', 'cancelled');
  -- A finished job (cancelled, failed by hand) records the outcome but moves no more.
  v_propagate := p_propagate AND NOT v_finished_job;
  -- Only a failure needs the step's retry policy before writing: a success
  -- is the guarded DELETE alone.
  v_found := true;
  IF p_outcome = 'failed' THEN
    SELECT s.status, s.attempts, s.max_retries, d.retry_backoff_secs, d.retry_strategy, d.retry_jitter,
      stroem_route_ability(s.route) AS ability
    INTO v_step
    FROM step_live s JOIN job_step d ON d.job_id = s.job_id AND d.step_name = s.step_name
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name
      AND (s.status = 'running' OR (s.status IN ('pending', 'ready', 'suspended') AND p_worker_id IS NULL AND p_attempt IS NULL))
      AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
      AND (p_attempt IS NULL OR s.attempts = p_attempt)
    FOR UPDATE OF s;
    v_found := FOUND;
    IF v_found AND v_step.status = 'running' AND NOT v_finished_job AND v_step.attempts <= v_step.max_retries THEN
      -- Retries left: back to the queue after the policy's delay; the job keeps running.
      UPDATE step_live s SET
        status = 'ready',
        ready_at = stroem_retry_at(s.attempts, v_step.retry_backoff_secs, v_step.retry_strategy, v_step.retry_jitter),
        retry_history = s.retry_history || stroem_retry_entry(s.attempts, s.worker_id, p_error, s.started_at),
        worker_id = NULL,
        started_at = NULL,
        output = NULL,
        error_message = p_error
      WHERE s.job_id = p_job_id AND s.step_name = p_step_name
      RETURNING s.ready_at, s.attempts INTO retry_at, step_attempts;
      result := 'ok';
      retried := true;
      step_status := 'ready';
      IF retry_at <= now() THEN
        PERFORM pg_notify(stroem_ready_channel(), v_step.ability);
      END IF;
      RETURN;
    END IF;
  END IF;
  IF v_found THEN
    IF p_propagate OR v_finished_job THEN
      -- Final: the live row goes, its last state appended (propagated, or a
      -- late outcome of a finished job, which moves nothing).
      WITH gone AS (
        DELETE FROM step_live s
        WHERE s.job_id = p_job_id AND s.step_name = p_step_name
          AND (s.status = 'running' OR (s.status IN ('pending', 'ready', 'suspended') AND p_worker_id IS NULL AND p_attempt IS NULL))
          AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
          AND (p_attempt IS NULL OR s.attempts = p_attempt)
        RETURNING s.*
      ), kept AS (
        INSERT INTO step_result (job_id, step_name, action_type, status, ready_at, worker_id, started_at, completed_at,
          output, error_message, attempts, rescues, max_retries, retry_history, deps_total, continue_on_failure,
          dependants, timeout_secs, deps_unfinished, deps_failed, deps_completed, propagated, cancel_requested_at,
          suspended_at, job_started_at)
        SELECT g.job_id, g.step_name, g.action_type, p_outcome, g.ready_at, g.worker_id, g.started_at, now(),
          p_output, p_error, g.attempts, g.rescues, g.max_retries, g.retry_history, g.deps_total, g.continue_on_failure,
          g.dependants, g.timeout_secs, g.deps_unfinished, g.deps_failed, g.deps_completed, v_propagate,
          g.cancel_requested_at, g.suspended_at, g.job_started_at
        FROM gone g
        RETURNING dependants, continue_on_failure, worker_id, attempts, job_started_at, started_at
      )
      SELECT k.dependants, k.continue_on_failure, k.worker_id, k.attempts, coalesce(k.job_started_at, k.started_at)
      INTO v_dependants, v_continue, step_worker_id, step_attempts, v_job_started
      FROM kept k;
    ELSE
      -- A bare mark of an unfinished job: the step stays live, unpropagated,
      -- until an advance applies it.
      UPDATE step_live s SET
        status = p_outcome,
        output = p_output,
        error_message = p_error,
        completed_at = now(),
        propagated = false
      WHERE s.job_id = p_job_id AND s.step_name = p_step_name
        AND (s.status = 'running' OR (s.status IN ('pending', 'ready', 'suspended') AND p_worker_id IS NULL AND p_attempt IS NULL))
        AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
        AND (p_attempt IS NULL OR s.attempts = p_attempt)
      RETURNING s.dependants, s.continue_on_failure, s.worker_id, s.attempts
      INTO v_dependants, v_continue, step_worker_id, step_attempts;
    END IF;
    v_found := FOUND;
  END IF;
  IF NOT v_found THEN
    SELECT s.status, s.worker_id, s.attempts, s.retry_history INTO step_status, step_worker_id, step_attempts, v_history
    FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    IF NOT FOUND THEN
      result := 'not_found';
    ELSIF step_status = p_outcome AND p_worker_id IS NOT NULL AND p_attempt IS NOT NULL
          AND step_worker_id = p_worker_id AND step_attempts = p_attempt THEN
      result := 'repeated';
    ELSIF p_outcome = 'failed' AND p_worker_id IS NOT NULL AND p_attempt IS NOT NULL
          AND v_history @> jsonb_build_array(jsonb_build_object('attempt', p_attempt, 'workerId', p_worker_id, 'error', p_error)) THEN
      -- This worker's same failure of this attempt was recorded and retried already (a
      -- retried call). A rescue's or a timeout's entry has another error: not a repeat.
      result := 'repeated';
      retried := true;
    ELSIF (p_worker_id IS NOT NULL AND step_worker_id IS DISTINCT FROM p_worker_id)
          OR (p_attempt IS NOT NULL AND step_attempts IS DISTINCT FROM p_attempt) THEN
      -- The row is not in the reporter's claim (rescued, retried, claimed again,
      -- never claimed by it), whatever its status: a stale report.
      result := 'not_owner';
    ELSE
      -- Its own claim ended otherwise (completed, then a fail), or unguarded on a finished step.
      result := 'invalid_transition';
    END IF;
    RETURN;
  END IF;
  result := 'ok';
  step_status := p_outcome;
  IF NOT v_propagate THEN
    RETURN;
  END IF;
  v_failed := CASE WHEN p_outcome = 'failed' AND NOT v_continue THEN 1 ELSE 0 END;
  IF v_single THEN
    -- A job of one step ends with it.
    INSERT INTO job_result (job_id, status, started_at, steps_unfinished, steps_failed)
    VALUES (p_job_id, CASE WHEN v_failed > 0 THEN 'failed' ELSE 'completed' END, coalesce(v_job_started, now()), 0, v_failed)
    RETURNING job_result.status INTO job_status;
    RETURN;
  END IF;
  IF EXISTS (
    SELECT 1 FROM step_live s
    WHERE s.job_id = p_job_id AND NOT s.propagated AND s.status IN ('completed', 'failed', 'skipped')
  ) THEN
    -- Bare marks wait for an advance: stroem_apply_outcomes applies them too.
    SELECT * INTO v_applied FROM stroem_apply_outcomes(
      p_job_id, v_dependants, array_fill(p_outcome, ARRAY[cardinality(v_dependants)]), 1, v_failed);
    promoted := v_applied.promoted;
    skipped := v_applied.skipped;
    job_status := v_applied.job_status;
    RETURN;
  END IF;
  v_finished := 1;
  IF cardinality(v_dependants) > 0 THEN
    -- The dependants' first level, inline (stroem_apply_outcomes' loop for
    -- one edge per dependant): each pending dependant takes this outcome
    -- into its counts and stroem_decide moves it (a skipped one moves to
    -- step_result: trigger step_live_ended).
    WITH dec AS (
      SELECT s.step_name,
             stroem_decide(s.deps_total, s.deps_unfinished - 1,
                           s.deps_failed + CASE WHEN p_outcome = 'failed' THEN 1 ELSE 0 END,
                           s.deps_completed + CASE WHEN p_outcome = 'completed' THEN 1 ELSE 0 END,
                           s.continue_on_failure) AS next
      FROM step_live s
      WHERE s.job_id = p_job_id AND s.step_name = ANY (v_dependants) AND s.status = 'pending'
    ), upd AS (
      UPDATE step_live s SET
        deps_unfinished = s.deps_unfinished - 1,
        deps_failed = s.deps_failed + CASE WHEN p_outcome = 'failed' THEN 1 ELSE 0 END,
        deps_completed = s.deps_completed + CASE WHEN p_outcome = 'completed' THEN 1 ELSE 0 END,
        status = dec.next,
        ready_at = CASE WHEN dec.next = 'ready' THEN now() ELSE s.ready_at END,
        completed_at = CASE WHEN dec.next = 'skipped' THEN now() ELSE s.completed_at END,
        propagated = (dec.next = 'skipped')
      FROM dec
      WHERE s.job_id = p_job_id AND s.step_name = dec.step_name
      -- The row's status as written: a loop step that its last instance
      -- moved has finished instead (trigger step_live_loop_collected).
      RETURNING s.step_name, s.status AS next, s.dependants, stroem_route_ability(s.route) AS ability
    )
    SELECT coalesce((SELECT array_agg(u.step_name ORDER BY u.step_name) FROM upd u WHERE u.next = 'ready'), '{}'),
           coalesce((SELECT array_agg(u.step_name ORDER BY u.step_name) FROM upd u WHERE u.next = 'skipped'), '{}'),
           coalesce((SELECT array_agg(d) FROM upd u CROSS JOIN LATERAL unnest(u.dependants) AS d WHERE u.next = 'skipped'), '{}'),
           coalesce((SELECT array_agg(DISTINCT u.ability) FROM upd u WHERE u.next = 'ready'), '{}'),
           EXISTS (SELECT 1 FROM upd u WHERE u.next IN ('completed', 'failed'))
    INTO promoted, skipped, v_next, v_types, v_collected;
    v_finished := 1 + cardinality(skipped);
    IF cardinality(v_next) > 0 OR v_collected THEN
      -- A skip cascades, or a loop step finished (a bare mark):
      -- stroem_apply_outcomes applies it, walks the next levels and
      -- settles the job with this level's count.
      SELECT * INTO v_applied FROM stroem_apply_outcomes(
        p_job_id, v_next, array_fill('skipped'::text, ARRAY[cardinality(v_next)]), v_finished, v_failed);
      promoted := promoted || v_applied.promoted;
      skipped := skipped || v_applied.skipped;
      job_status := v_applied.job_status;
      v_finished := 0;
    END IF;
    IF cardinality(v_types) > 0 THEN
      PERFORM pg_notify(stroem_ready_channel(), t) FROM unnest(v_types) AS t;
    END IF;
  END IF;
  IF v_finished > 0 THEN
    -- The job's counts, in one UPDATE (stroem_settle_jobs for one job,
    -- inlined: a set-returning call over arrays cost more than the UPDATE
    -- itself on this, the commonest path). Finished, the row moves to
    -- job_result (trigger job_live_ended).
    UPDATE job_live j SET
      steps_unfinished = j.steps_unfinished - v_finished,
      steps_failed = j.steps_failed + v_failed,
      status = CASE WHEN j.steps_unfinished > v_finished THEN 'running'
                    WHEN j.steps_failed + v_failed > 0 THEN 'failed'
                    ELSE 'completed' END,
      started_at = coalesce(j.started_at, now()),
      completed_at = CASE WHEN j.steps_unfinished > v_finished THEN NULL ELSE now() END
    WHERE j.job_id = p_job_id
    RETURNING j.status INTO job_status;
  END IF;
END
$$;
--> statement-breakpoint
-- A batch of guarded reports (JobStepRepo.reportMany), set-based: the jobs'
-- rows are locked in job id order, the steps marked, and the batch's edges
-- (finished step -> dependant), across all its jobs, are applied one level at a time, with one
-- UPDATE per level (a level past the first only when steps were skipped),
-- and every job the batch moves settles in one UPDATE. A report is credited
-- with the moves it caused: a dependant that several reports of the batch
-- moved (a join whose parents finished together) is credited to the last of
-- them in the batch's order, as the one-at-a-time version did for promotions
-- (for a skip, that version credited the first failure; this one the last
-- report that reached the step). A job whose bare marks wait for an advance
-- (rare: callers composing markCompleted + advance) still goes through
-- stroem_apply_outcomes, which applies those too; its moves are credited to
-- its last report in the batch.
--
-- The jobs are locked as stroem_lock_job locks one (job_live rows, then the
-- reported steps' rows of jobs without one). Every statement reaches the
-- tables by key: the planner takes
-- jsonb_to_recordset and unnest for 100 and 10 rows, and joined to them it
-- read `job` whole (a hash join) on tables of up to some 20,000 jobs, four
-- times a call (the lock, the marks' join, the settle, the answers), and
-- `job_step` once. Accepted reports are answered from their marks and the
-- settle; only a refused one reads its step again.
CREATE OR REPLACE FUNCTION stroem_report_many(p_reports jsonb)
RETURNS TABLE(ord integer, result text, promoted text[], skipped text[], job_status text,
              step_status text, step_worker_id uuid, step_attempts integer, retried boolean, retry_at timestamptz)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  -- Accepted reports, in order, and whether each went back to the queue.
  v_ords integer[];
  v_retried boolean[];
  -- Their steps after the marks (the answer's step columns).
  v_step_status text[];
  v_step_worker uuid[];
  v_step_attempts integer[];
  v_step_ready timestamptz[];
  -- Every job of the batch that exists, and its status (after the batch, once settled).
  v_job_ids uuid[];
  v_job_statuses text[];
  v_settled_ids uuid[];
  v_settled_statuses text[];
  v_types text[]; -- action types of steps made ready now (notified on commit)
  -- Per job that moves: reports finished, failures that fail it, its last
  -- report (before the settle: with the steps the levels skipped added).
  v_jobs uuid[];
  v_finished integer[];
  v_failed integer[];
  v_last integer[];
  -- Per job with a finished step: when its job started (see `starts`).
  v_start_ids uuid[];
  v_starts timestamptz[];
  -- The current level's edges: job, dependant, the finished dependency's outcome, credited report.
  e_jobs uuid[];
  e_names text[];
  e_outcomes text[];
  e_origins integer[];
  -- Moves, credited: report, order within it, step, 'ready' | 'skipped'.
  c_ords integer[] := '{}';
  c_levels integer[] := '{}';
  c_names text[] := '{}';
  c_kinds text[] := '{}';
  v_skipped_jobs uuid[] := '{}'; -- one entry per step the levels skipped (settled as finished)
  v_level integer := 0;
  v_waiting uuid[];
  v_wait record;
  v_applied record;
  l_ords integer[];
  l_names text[];
  l_kinds text[];
  l_skipped_jobs uuid[];
  l_types text[];
  l_collected uuid[];
  v_collected uuid[] := '{}';
BEGIN
  -- The jobs' locks (stroem_lock_job for a batch): the job_live rows,
  -- deeper jobs first (children before their parents), then in job id
  -- order; then, for the jobs without one, the reported steps' live rows
  -- in job id order (a job of one step: the lock of its state); then those
  -- jobs' results (finished) or, without one, `running` (a job of one step).
  -- `= ANY (ARRAY(...))` walks the primary keys: joined to
  -- jsonb_to_recordset (which the planner takes for 100 rows), the tables
  -- were read whole up to some 20,000 rows.
  SELECT coalesce(array_agg(l.job_id ORDER BY l.job_id), '{}'), coalesce(array_agg(l.status ORDER BY l.job_id), '{}')
  INTO v_job_ids, v_job_statuses
  FROM (
    SELECT j.job_id, j.status FROM job_live j
    WHERE j.job_id = ANY (ARRAY(SELECT x.job_id FROM jsonb_to_recordset(p_reports) AS x(job_id uuid)))
    -- A child before its parent (a child's end locks its parent next), then by id.
    ORDER BY j.depth DESC, j.job_id
    FOR NO KEY UPDATE
  ) AS l;
  PERFORM 1 FROM (
    SELECT s.job_id FROM step_live s
    WHERE s.job_id = ANY (ARRAY(SELECT x.job_id FROM jsonb_to_recordset(p_reports) AS x(job_id uuid)
                                WHERE NOT (x.job_id = ANY (v_job_ids))))
      AND (s.job_id, s.step_name) IN (SELECT x.job_id, x.step_name FROM jsonb_to_recordset(p_reports) AS x(job_id uuid, step_name text))
    ORDER BY s.job_id, s.step_name
    FOR NO KEY UPDATE
  ) AS k;
  SELECT v_job_ids || coalesce(array_agg(o.job_id ORDER BY o.job_id), '{}'),
         v_job_statuses || coalesce(array_agg(o.status ORDER BY o.job_id), '{}')
  INTO v_job_ids, v_job_statuses
  FROM (
    SELECT j.job_id, coalesce(r.status, 'running') AS status
    FROM job j LEFT JOIN job_result r ON r.job_id = j.job_id
    WHERE j.job_id = ANY (ARRAY(SELECT x.job_id FROM jsonb_to_recordset(p_reports) AS x(job_id uuid)
                                WHERE NOT (x.job_id = ANY (v_job_ids))))
  ) AS o;

  -- The guarded marks, and what they start: per job, per edge.
  WITH r AS (
    SELECT x.* FROM jsonb_to_recordset(p_reports) AS x(
      i integer, job_id uuid, step_name text, outcome text, output jsonb, error text, worker_id uuid, attempt integer)
  ), target AS (
    -- Each accepted report's live row, and whether it goes back to the queue
    -- (a failure with retries left, in an unfinished job).
    SELECT r.i, r.outcome, r.output, r.error, s.job_id, s.step_name, j.status AS job_status,
           (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled')
            AND s.attempts <= s.max_retries) AS retry
    FROM r JOIN unnest(v_job_ids, v_job_statuses) AS j(job_id, status) ON j.job_id = r.job_id
    JOIN step_live s ON s.job_id = r.job_id AND s.step_name = r.step_name
    WHERE s.job_id = ANY (v_job_ids)
      AND (s.status = 'running' OR (s.status IN ('pending', 'ready', 'suspended') AND r.worker_id IS NULL AND r.attempt IS NULL))
      AND (r.worker_id IS NULL OR s.worker_id = r.worker_id)
      AND (r.attempt IS NULL OR s.attempts = r.attempt)
  ), requeued AS (
    UPDATE step_live s SET
      status = 'ready',
      output = NULL,
      error_message = t.error,
      ready_at = stroem_retry_at(s.attempts, d.retry_backoff_secs, d.retry_strategy, d.retry_jitter),
      worker_id = NULL,
      started_at = NULL,
      retry_history = s.retry_history || stroem_retry_entry(s.attempts, s.worker_id, t.error, s.started_at)
    FROM target t JOIN job_step d ON d.job_id = t.job_id AND d.step_name = t.step_name
    WHERE t.retry AND s.job_id = t.job_id AND s.step_name = t.step_name AND s.job_id = ANY (v_job_ids)
    RETURNING t.i, s.job_id, s.dependants, s.continue_on_failure, t.outcome, false AS moving,
      true AS retried, stroem_route_ability(s.route) AS ability, s.ready_at, s.status, s.worker_id, s.attempts
  ), gone AS (
    -- Final: the live row goes and its last state is appended (propagated
    -- unless its job is finished: a late outcome, which moves nothing).
    DELETE FROM step_live s USING target t
    WHERE NOT t.retry AND s.job_id = t.job_id AND s.step_name = t.step_name AND s.job_id = ANY (v_job_ids)
    RETURNING t.i, t.outcome AS r_outcome, t.output AS r_output, t.error AS r_error,
      t.job_status NOT IN ('completed', 'failed', 'cancelled') AS moving, s.*
  ), kept AS (
    INSERT INTO step_result (job_id, step_name, action_type, status, ready_at, worker_id, started_at, completed_at,
      output, error_message, attempts, rescues, max_retries, retry_history, deps_total, continue_on_failure,
      dependants, timeout_secs, deps_unfinished, deps_failed, deps_completed, propagated, cancel_requested_at,
      suspended_at, job_started_at)
    SELECT g.job_id, g.step_name, g.action_type, g.r_outcome, g.ready_at, g.worker_id, g.started_at, now(),
      g.r_output, g.r_error, g.attempts, g.rescues, g.max_retries, g.retry_history, g.deps_total, g.continue_on_failure,
      g.dependants, g.timeout_secs, g.deps_unfinished, g.deps_failed, g.deps_completed, g.moving,
      g.cancel_requested_at, g.suspended_at, g.job_started_at
    FROM gone g
    RETURNING job_id
  ), marked AS (
    SELECT q.* FROM requeued q
    UNION ALL
    SELECT g.i, g.job_id, g.dependants, g.continue_on_failure, g.r_outcome, g.moving, false, stroem_route_ability(g.route),
           g.ready_at, g.r_outcome, g.worker_id, g.attempts
    FROM gone g
  ), jobs AS (
    SELECT m.job_id, count(*)::integer AS n,
           count(*) FILTER (WHERE m.outcome = 'failed' AND NOT m.continue_on_failure)::integer AS failed,
           max(m.i) AS last
    FROM marked m WHERE m.moving GROUP BY m.job_id
  ), edges AS (
    SELECT m.job_id, d.name, m.outcome, m.i
    FROM marked m CROSS JOIN LATERAL unnest(m.dependants) AS d(name)
    WHERE m.moving
  ), starts AS (
    -- When each job's finished steps' job started (a one-step job's start,
    -- for its job_result), from the deleted live rows: the settle reads no
    -- step_result for it.
    SELECT g.job_id, min(coalesce(g.job_started_at, g.started_at)) AS started FROM gone g GROUP BY g.job_id
  )
  SELECT
    (SELECT coalesce(array_agg(m.i ORDER BY m.i), '{}') FROM marked m),
    (SELECT coalesce(array_agg(m.retried ORDER BY m.i), '{}') FROM marked m),
    (SELECT coalesce(array_agg(m.status ORDER BY m.i), '{}') FROM marked m),
    (SELECT coalesce(array_agg(m.worker_id ORDER BY m.i), '{}') FROM marked m),
    (SELECT coalesce(array_agg(m.attempts ORDER BY m.i), '{}') FROM marked m),
    (SELECT coalesce(array_agg(m.ready_at ORDER BY m.i), '{}') FROM marked m),
    (SELECT coalesce(array_agg(DISTINCT m.ability), '{}') FROM marked m WHERE m.retried AND m.ready_at <= now()),
    (SELECT coalesce(array_agg(jobs.job_id ORDER BY jobs.job_id), '{}') FROM jobs),
    (SELECT coalesce(array_agg(jobs.n ORDER BY jobs.job_id), '{}') FROM jobs),
    (SELECT coalesce(array_agg(jobs.failed ORDER BY jobs.job_id), '{}') FROM jobs),
    (SELECT coalesce(array_agg(jobs.last ORDER BY jobs.job_id), '{}') FROM jobs),
    (SELECT coalesce(array_agg(e.job_id ORDER BY e.job_id, e.name, e.i), '{}') FROM edges e),
    (SELECT coalesce(array_agg(e.name ORDER BY e.job_id, e.name, e.i), '{}') FROM edges e),
    (SELECT coalesce(array_agg(e.outcome ORDER BY e.job_id, e.name, e.i), '{}') FROM edges e),
    (SELECT coalesce(array_agg(e.i ORDER BY e.job_id, e.name, e.i), '{}') FROM edges e),
    (SELECT coalesce(array_agg(st.job_id ORDER BY st.job_id), '{}') FROM starts st),
    (SELECT coalesce(array_agg(st.started ORDER BY st.job_id), '{}') FROM starts st)
  INTO v_ords, v_retried, v_step_status, v_step_worker, v_step_attempts, v_step_ready, v_types, v_jobs, v_finished, v_failed, v_last, e_jobs, e_names, e_outcomes, e_origins,
       v_start_ids, v_starts;

  -- Jobs with bare marks waiting (served by idx_step_live_unpropagated; none
  -- on the report path): one at a time through stroem_apply_outcomes, which
  -- applies those marks, this batch's outcomes, settles and notifies.
  SELECT coalesce(array_agg(DISTINCT s.job_id), '{}') INTO v_waiting
  FROM step_live s
  WHERE s.job_id = ANY (v_jobs) AND NOT s.propagated AND s.status IN ('completed', 'failed', 'skipped');
  IF cardinality(v_waiting) > 0 THEN
    FOR v_wait IN
      SELECT t.job_id, t.n, t.failed, t.last,
             coalesce((SELECT array_agg(e.name ORDER BY e.name, e.origin) FROM unnest(e_jobs, e_names, e_origins) AS e(job_id, name, origin)
                       WHERE e.job_id = t.job_id), '{}') AS targets,
             coalesce((SELECT array_agg(e.outcome ORDER BY e.name, e.origin) FROM unnest(e_jobs, e_names, e_outcomes, e_origins) AS e(job_id, name, outcome, origin)
                       WHERE e.job_id = t.job_id), '{}') AS outcomes
      FROM unnest(v_jobs, v_finished, v_failed, v_last) AS t(job_id, n, failed, last)
      WHERE t.job_id = ANY (v_waiting)
      ORDER BY t.job_id
    LOOP
      SELECT * INTO v_applied FROM stroem_apply_outcomes(v_wait.job_id, v_wait.targets, v_wait.outcomes, v_wait.n, v_wait.failed);
      v_job_statuses[array_position(v_job_ids, v_wait.job_id)] := v_applied.job_status;
      SELECT c_ords || coalesce(array_agg(v_wait.last), '{}'), c_levels || coalesce(array_agg(m.k::integer ORDER BY m.k), '{}'),
             c_names || coalesce(array_agg(m.name ORDER BY m.k), '{}'), c_kinds || coalesce(array_agg(m.kind ORDER BY m.k), '{}')
      INTO c_ords, c_levels, c_names, c_kinds
      FROM (SELECT p.name, p.k, 'ready' AS kind FROM unnest(v_applied.promoted) WITH ORDINALITY AS p(name, k)
            UNION ALL
            SELECT q.name, cardinality(v_applied.promoted) + q.k, 'skipped' FROM unnest(v_applied.skipped) WITH ORDINALITY AS q(name, k)) AS m;
    END LOOP;
    SELECT coalesce(array_agg(t.job_id ORDER BY t.job_id), '{}'), coalesce(array_agg(t.n ORDER BY t.job_id), '{}'),
           coalesce(array_agg(t.failed ORDER BY t.job_id), '{}')
    INTO v_jobs, v_finished, v_failed
    FROM unnest(v_jobs, v_finished, v_failed) AS t(job_id, n, failed)
    WHERE NOT (t.job_id = ANY (v_waiting));
    SELECT coalesce(array_agg(e.job_id ORDER BY e.job_id, e.name, e.origin), '{}'), coalesce(array_agg(e.name ORDER BY e.job_id, e.name, e.origin), '{}'),
           coalesce(array_agg(e.outcome ORDER BY e.job_id, e.name, e.origin), '{}'), coalesce(array_agg(e.origin ORDER BY e.job_id, e.name, e.origin), '{}')
    INTO e_jobs, e_names, e_outcomes, e_origins
    FROM unnest(e_jobs, e_names, e_outcomes, e_origins) AS e(job_id, name, outcome, origin)
    WHERE NOT (e.job_id = ANY (v_waiting));
  END IF;

  -- The levels: each pending dependant takes the counts of its finished
  -- dependencies (stroem_decide, as stroem_apply_outcomes); a skipped one
  -- finishes in turn, and its dependants make the next level.
  WHILE cardinality(e_jobs) > 0 LOOP
    v_level := v_level + 1;
    WITH agg AS (
      SELECT t.job_id, t.name, count(*)::integer AS n,
             count(*) FILTER (WHERE t.outcome = 'failed')::integer AS f,
             count(*) FILTER (WHERE t.outcome = 'completed')::integer AS c,
             max(t.origin) AS origin
      FROM unnest(e_jobs, e_names, e_outcomes, e_origins) AS t(job_id, name, outcome, origin)
      GROUP BY t.job_id, t.name
    ), upd AS (
      -- One walk of the primary key per dependant: the decision
      -- (stroem_decide, an inlined CASE) is written into the SET list, whose
      -- expressions all read the row as it was. A skipped step moves to
      -- step_result (trigger step_live_ended).
      UPDATE step_live s SET
        deps_unfinished = s.deps_unfinished - agg.n,
        deps_failed = s.deps_failed + agg.f,
        deps_completed = s.deps_completed + agg.c,
        status = stroem_decide(s.deps_total, s.deps_unfinished - agg.n, s.deps_failed + agg.f,
                               s.deps_completed + agg.c, s.continue_on_failure),
        ready_at = CASE WHEN stroem_decide(s.deps_total, s.deps_unfinished - agg.n, s.deps_failed + agg.f,
                                           s.deps_completed + agg.c, s.continue_on_failure) = 'ready'
                        THEN now() ELSE s.ready_at END,
        completed_at = CASE WHEN stroem_decide(s.deps_total, s.deps_unfinished - agg.n, s.deps_failed + agg.f,
                                               s.deps_completed + agg.c, s.continue_on_failure) = 'skipped'
                            THEN now() ELSE s.completed_at END,
        propagated = stroem_decide(s.deps_total, s.deps_unfinished - agg.n, s.deps_failed + agg.f,
                                   s.deps_completed + agg.c, s.continue_on_failure) = 'skipped'
      FROM agg
      WHERE s.job_id = agg.job_id AND s.step_name = agg.name AND s.status = 'pending'
      RETURNING s.job_id, s.step_name, s.status AS next, s.dependants, stroem_route_ability(s.route) AS ability, agg.origin
    ), nxt AS (
      SELECT u.job_id, d.name, u.origin
      FROM upd u CROSS JOIN LATERAL unnest(u.dependants) AS d(name)
      WHERE u.next = 'skipped'
    )
    -- The three credit arrays are zipped later: one order for all three.
    SELECT
      (SELECT coalesce(array_agg(u.origin ORDER BY u.job_id, u.step_name), '{}') FROM upd u WHERE u.next IN ('ready', 'skipped')),
      (SELECT coalesce(array_agg(u.step_name ORDER BY u.job_id, u.step_name), '{}') FROM upd u WHERE u.next IN ('ready', 'skipped')),
      (SELECT coalesce(array_agg(u.next ORDER BY u.job_id, u.step_name), '{}') FROM upd u WHERE u.next IN ('ready', 'skipped')),
      (SELECT coalesce(array_agg(u.job_id), '{}') FROM upd u WHERE u.next = 'skipped'),
      (SELECT coalesce(array_agg(DISTINCT u.ability), '{}') FROM upd u WHERE u.next = 'ready'),
      (SELECT coalesce(array_agg(n.job_id ORDER BY n.job_id, n.name, n.origin), '{}') FROM nxt n),
      (SELECT coalesce(array_agg(n.name ORDER BY n.job_id, n.name, n.origin), '{}') FROM nxt n),
      (SELECT coalesce(array_agg(n.origin ORDER BY n.job_id, n.name, n.origin), '{}') FROM nxt n),
      -- Loop steps their last instance finished (trigger step_live_loop_collected): bare marks.
      (SELECT coalesce(array_agg(u.job_id), '{}') FROM upd u WHERE u.next IN ('completed', 'failed'))
    INTO l_ords, l_names, l_kinds, l_skipped_jobs, l_types, e_jobs, e_names, e_origins, l_collected;
    c_ords := c_ords || l_ords;
    c_levels := c_levels || array_fill(v_level, ARRAY[cardinality(l_ords)]);
    c_names := c_names || l_names;
    c_kinds := c_kinds || l_kinds;
    v_skipped_jobs := v_skipped_jobs || l_skipped_jobs;
    v_types := v_types || l_types;
    v_collected := v_collected || l_collected;
    e_outcomes := array_fill('skipped'::text, ARRAY[cardinality(e_jobs)]);
  END LOOP;

  -- Jobs in which a loop step finished (its last instance is in this batch):
  -- stroem_apply_outcomes applies it (and settles its count; the batch's
  -- own counts settle below), its moves credited to the job's last report.
  FOR v_wait IN
    SELECT DISTINCT c.job_id, t.last FROM unnest(v_collected) AS c(job_id)
    LEFT JOIN unnest(v_jobs, v_last) AS t(job_id, last) ON t.job_id = c.job_id
    ORDER BY c.job_id
  LOOP
    SELECT * INTO v_applied FROM stroem_apply_outcomes(v_wait.job_id, '{}', '{}', 0, 0);
    SELECT c_ords || coalesce(array_agg(v_wait.last), '{}'), c_levels || coalesce(array_agg(v_level + m.k::integer ORDER BY m.k), '{}'),
           c_names || coalesce(array_agg(m.name ORDER BY m.k), '{}'), c_kinds || coalesce(array_agg(m.kind ORDER BY m.k), '{}')
    INTO c_ords, c_levels, c_names, c_kinds
    FROM (SELECT p.name, p.k, 'ready' AS kind FROM unnest(v_applied.promoted) WITH ORDINALITY AS p(name, k)
          UNION ALL
          SELECT q.name, cardinality(v_applied.promoted) + q.k, 'skipped' FROM unnest(v_applied.skipped) WITH ORDINALITY AS q(name, k)) AS m
    WHERE v_wait.last IS NOT NULL;
  END LOOP;

  -- Every job the batch moved, settled at once (stroem_settle_jobs): its
  -- finished reports and the steps the levels skipped, per job.
  SELECT coalesce(array_agg(f.job_id ORDER BY f.job_id), '{}'), coalesce(array_agg(f.n ORDER BY f.job_id), '{}'),
         coalesce(array_agg(f.failed ORDER BY f.job_id), '{}'), coalesce(array_agg(t.started ORDER BY f.job_id), '{}')
  INTO v_jobs, v_finished, v_failed, v_starts
  FROM (
    SELECT u.job_id, sum(u.n)::integer AS n, sum(u.failed)::integer AS failed
    FROM (
      SELECT x.job_id, x.n, x.failed FROM unnest(v_jobs, v_finished, v_failed) AS x(job_id, n, failed)
      UNION ALL SELECT y.job_id, 1, 0 FROM unnest(v_skipped_jobs) AS y(job_id)
    ) AS u
    GROUP BY u.job_id
  ) AS f
  LEFT JOIN unnest(v_start_ids, v_starts) AS t(job_id, started) ON t.job_id = f.job_id;
  SELECT coalesce(array_agg(st.job_id), '{}'), coalesce(array_agg(st.status), '{}')
  INTO v_settled_ids, v_settled_statuses
  FROM stroem_settle_jobs(v_jobs, v_finished, v_failed, v_starts) AS st;

  IF cardinality(v_types) > 0 THEN
    PERFORM pg_notify(stroem_ready_channel(), t) FROM (SELECT DISTINCT unnest(v_types) AS t) AS types;
  END IF;

  -- The answers. An accepted report's step columns come from its mark, its
  -- job's status from the settle (or the lock, when the batch did not move
  -- the job): only a refused report reads its step again.
  RETURN QUERY
    WITH r AS (
      SELECT x.* FROM jsonb_to_recordset(p_reports) AS x(
        i integer, job_id uuid, step_name text, outcome text, error text, worker_id uuid, attempt integer)
    ), acc AS (
      SELECT t.* FROM unnest(v_ords, v_retried, v_step_status, v_step_worker, v_step_attempts, v_step_ready)
        AS t(i, retried, status, worker_id, attempts, ready_at)
    ), jobs AS (
      SELECT l.job_id, coalesce(st.status, l.status) AS status
      FROM unnest(v_job_ids, v_job_statuses) AS l(job_id, status)
        LEFT JOIN unnest(v_settled_ids, v_settled_statuses) AS st(job_id, status) ON st.job_id = l.job_id
    ), credit AS (
      SELECT c.i,
             array_agg(c.name ORDER BY c.level, c.name) FILTER (WHERE c.kind = 'ready') AS promoted,
             array_agg(c.name ORDER BY c.level, c.name) FILTER (WHERE c.kind = 'skipped') AS skipped
      FROM unnest(c_ords, c_levels, c_names, c_kinds) AS c(i, level, name, kind)
      GROUP BY c.i
    )
    SELECT r.i,
      CASE
        WHEN acc.i IS NOT NULL THEN 'ok'
        WHEN s.step_name IS NULL THEN 'not_found'
        WHEN s.status = r.outcome AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.worker_id = r.worker_id AND s.attempts = r.attempt THEN 'repeated'
        WHEN r.outcome = 'failed' AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.retry_history @> jsonb_build_array(jsonb_build_object('attempt', r.attempt, 'workerId', r.worker_id, 'error', r.error)) THEN 'repeated'
        WHEN (r.worker_id IS NOT NULL AND s.worker_id IS DISTINCT FROM r.worker_id)
          OR (r.attempt IS NOT NULL AND s.attempts IS DISTINCT FROM r.attempt) THEN 'not_owner'
        ELSE 'invalid_transition'
      END,
      CASE WHEN acc.i IS NULL THEN '{}'::text[] ELSE coalesce(credit.promoted, '{}') END,
      CASE WHEN acc.i IS NULL THEN '{}'::text[] ELSE coalesce(credit.skipped, '{}') END,
      jobs.status,
      coalesce(acc.status, s.status), coalesce(acc.worker_id, s.worker_id), coalesce(acc.attempts, s.attempts),
      coalesce(acc.retried, r.outcome = 'failed' AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.retry_history @> jsonb_build_array(jsonb_build_object('attempt', r.attempt, 'workerId', r.worker_id, 'error', r.error)), false),
      CASE WHEN acc.i IS NOT NULL THEN CASE WHEN acc.retried THEN acc.ready_at END
           WHEN r.outcome = 'failed' AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.retry_history @> jsonb_build_array(jsonb_build_object('attempt', r.attempt, 'workerId', r.worker_id, 'error', r.error)) THEN s.ready_at END
    FROM r
      LEFT JOIN acc ON acc.i = r.i
      LEFT JOIN credit ON credit.i = r.i
      LEFT JOIN jobs ON jobs.job_id = r.job_id
      -- Only a refused report (acc.i IS NULL: a one-time filter per row) reads its step.
      LEFT JOIN LATERAL (
        SELECT s1.step_name, s1.status, s1.worker_id, s1.attempts, s1.retry_history, s1.ready_at
        FROM job_step_state s1
        WHERE acc.i IS NULL AND s1.job_id = r.job_id AND s1.step_name = r.step_name
        LIMIT 1 -- keeps the sub-select per row (not pulled up into a join that reads job_step whole)
      ) AS s ON true
    ORDER BY r.i;
END
$$;
