-- Custom SQL migration (hand-written: drizzle-kit does not model functions
-- or triggers); the job_deadline table comes from 0010_job_deadlines.
--
-- 1. Job deadlines. A trigger writes a job_deadline row for every job
--    inserted with timeout_secs (created_at + timeout_secs), whatever the
--    insert path, and moves it when an UPDATE sets created_at or
--    timeout_secs; jobs already unfinished with a timeout are backfilled.
--    stroem_sweep_timeouts' second phase walks job_deadline by deadline
--    (idx_job_deadline) instead of the dropped idx_job_timeout, and deletes
--    each row it visits. With nothing on `job` naming completed_at, the
--    UPDATE that finishes a job is HOT.
-- 2. The report's fast path: stroem_finish_step as in 0005, except that a
--    step nothing depends on settles its job with one UPDATE instead of a
--    call of stroem_settle_jobs (same arithmetic and the same CASE as
--    jobStatusFromCounts in @stroem/orchestrator). CREATE OR REPLACE with the
--    same signatures: statements prepared by running processes stay valid.
CREATE FUNCTION stroem_job_deadline() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.timeout_secs IS NULL OR NEW.completed_at IS NOT NULL THEN
    DELETE FROM job_deadline d WHERE d.job_id = NEW.job_id;
  ELSE
    INSERT INTO job_deadline (job_id, deadline)
    VALUES (NEW.job_id, NEW.created_at + make_interval(secs => NEW.timeout_secs))
    ON CONFLICT (job_id) DO UPDATE SET deadline = EXCLUDED.deadline;
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER job_deadline_insert AFTER INSERT ON job
FOR EACH ROW WHEN (NEW.timeout_secs IS NOT NULL)
EXECUTE FUNCTION stroem_job_deadline();
--> statement-breakpoint
-- Only an UPDATE that sets created_at or timeout_secs fires it (an operator
-- moving a deadline): the claim and report UPDATEs set neither.
CREATE TRIGGER job_deadline_update AFTER UPDATE OF created_at, timeout_secs ON job
FOR EACH ROW WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at OR OLD.timeout_secs IS DISTINCT FROM NEW.timeout_secs)
EXECUTE FUNCTION stroem_job_deadline();
--> statement-breakpoint
INSERT INTO job_deadline (job_id, deadline)
SELECT j.job_id, j.created_at + make_interval(secs => j.timeout_secs)
FROM job j
WHERE j.completed_at IS NULL AND j.timeout_secs IS NOT NULL
ON CONFLICT DO NOTHING;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION stroem_sweep_timeouts()
RETURNS TABLE(kind text, job_id uuid, step_name text, worker_id uuid, attempt integer, outcome text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  f record;
BEGIN
  FOR r IN
    SELECT s.job_id AS jid, s.step_name AS sname, s.worker_id AS wid, s.attempts AS n, s.timeout_secs AS secs
    FROM job_step s
    WHERE s.status = 'running' AND s.timeout_secs IS NOT NULL
      AND s.started_at + make_interval(secs => s.timeout_secs) <= now()
    ORDER BY s.job_id, s.step_name
  LOOP
    PERFORM 1 FROM job j WHERE j.job_id = r.jid FOR NO KEY UPDATE SKIP LOCKED;
    CONTINUE WHEN NOT FOUND;
    SELECT * INTO f FROM stroem_finish_step(r.jid, r.sname, 'failed', NULL,
      'timed out: running for more than ' || r.secs || ' s (timeoutSecs)', r.wid, r.n, true);
    CONTINUE WHEN f.result <> 'ok';
    kind := 'step';
    job_id := r.jid;
    step_name := r.sname;
    worker_id := r.wid;
    attempt := r.n;
    outcome := CASE WHEN f.retried THEN 'retried' ELSE 'failed' END;
    RETURN NEXT;
  END LOOP;

  FOR r IN
    SELECT j.job_id AS jid, j.timeout_secs AS secs
    FROM job_deadline d JOIN job j ON j.job_id = d.job_id
    WHERE d.deadline <= now()
    ORDER BY j.job_id
    FOR NO KEY UPDATE OF j SKIP LOCKED
  LOOP
    -- Visited once: the deadline row goes whether the job was still
    -- unfinished (it fails now) or had finished in time.
    DELETE FROM job_deadline d WHERE d.job_id = r.jid;
    UPDATE job j SET status = 'failed', completed_at = now(),
      error_message = 'timed out: not finished ' || r.secs || ' s after its creation (timeoutSecs)'
    WHERE j.job_id = r.jid AND j.status IN ('pending', 'running');
    CONTINUE WHEN NOT FOUND;
    UPDATE job_step s SET
      status = CASE WHEN s.status = 'running' THEN s.status ELSE 'cancelled' END,
      completed_at = CASE WHEN s.status = 'running' THEN s.completed_at ELSE now() END,
      propagated = CASE WHEN s.status = 'running' THEN s.propagated ELSE true END,
      cancel_requested_at = CASE WHEN s.status = 'running' THEN now() ELSE s.cancel_requested_at END
    WHERE s.job_id = r.jid AND s.status IN ('pending', 'ready', 'running');
    kind := 'job';
    job_id := r.jid;
    step_name := NULL;
    worker_id := NULL;
    attempt := NULL;
    outcome := 'failed';
    RETURN NEXT;
  END LOOP;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION stroem_finish_step(
  p_job_id uuid, p_step_name text, p_outcome text, p_output jsonb, p_error text,
  p_worker_id uuid, p_attempt integer, p_propagate boolean,
  OUT result text, OUT promoted text[], OUT skipped text[], OUT job_status text,
  OUT step_status text, OUT step_worker_id uuid, OUT step_attempts integer,
  OUT retried boolean, OUT retry_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_job_status text;
  v_propagate boolean;
  v_dependants text[];
  v_continue boolean;
  v_applied record;
  v_step record;
  v_history jsonb;
  v_found boolean;
  v_failed integer;
BEGIN
  promoted := '{}';
  skipped := '{}';
  retried := false;
  SELECT j.status INTO v_job_status FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  job_status := v_job_status;
  -- A finished job (cancelled, failed by hand) records the outcome but moves no more.
  v_propagate := p_propagate AND v_job_status NOT IN ('completed', 'failed', 'cancelled');
  -- Only a failure needs the step's retry policy before writing: a success
  -- is the guarded UPDATE alone.
  v_found := true;
  IF p_outcome = 'failed' THEN
    SELECT s.status, s.attempts, s.max_retries, s.retry_backoff_secs, s.retry_strategy, s.retry_jitter, s.action_type
    INTO v_step
    FROM job_step s
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name
      AND (s.status = 'running' OR (s.status = 'ready' AND p_worker_id IS NULL AND p_attempt IS NULL))
      AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
      AND (p_attempt IS NULL OR s.attempts = p_attempt)
    FOR UPDATE;
    v_found := FOUND;
    IF v_found AND v_step.status = 'running' AND v_job_status NOT IN ('completed', 'failed', 'cancelled')
       AND v_step.attempts <= v_step.max_retries THEN
      -- Retries left: back to the queue after the policy's delay; the job keeps running.
      UPDATE job_step s SET
        status = 'ready',
        ready_at = stroem_retry_at(s.attempts, s.retry_backoff_secs, s.retry_strategy, s.retry_jitter),
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
        PERFORM pg_notify('stroem_ready', v_step.action_type);
      END IF;
      RETURN;
    END IF;
  END IF;
  IF v_found THEN
    UPDATE job_step s SET
      status = p_outcome,
      output = p_output,
      error_message = p_error,
      completed_at = now(),
      propagated = v_propagate
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name
      AND (s.status = 'running' OR (s.status = 'ready' AND p_worker_id IS NULL AND p_attempt IS NULL))
      AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
      AND (p_attempt IS NULL OR s.attempts = p_attempt)
    RETURNING s.dependants, s.continue_on_failure, s.worker_id, s.attempts
    INTO v_dependants, v_continue, step_worker_id, step_attempts;
    v_found := FOUND;
  END IF;
  IF NOT v_found THEN
    SELECT s.status, s.worker_id, s.attempts, s.retry_history INTO step_status, step_worker_id, step_attempts, v_history
    FROM job_step s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    IF NOT FOUND THEN
      result := 'not_found';
    ELSIF step_status = p_outcome AND p_worker_id IS NOT NULL AND p_attempt IS NOT NULL
          AND step_worker_id = p_worker_id AND step_attempts = p_attempt THEN
      result := 'repeated';
    ELSIF p_outcome = 'failed' AND p_worker_id IS NOT NULL AND p_attempt IS NOT NULL
          AND v_history @> jsonb_build_array(jsonb_build_object('attempt', p_attempt, 'workerId', p_worker_id)) THEN
      -- This worker's failure of this attempt was recorded and retried already.
      result := 'repeated';
      retried := true;
    ELSIF step_status <> 'running' THEN
      result := 'invalid_transition';
    ELSE
      result := 'not_owner';
    END IF;
    RETURN;
  END IF;
  result := 'ok';
  step_status := p_outcome;
  IF v_propagate AND cardinality(v_dependants) = 0 AND NOT EXISTS (
    SELECT 1 FROM job_step s
    WHERE s.job_id = p_job_id AND NOT s.propagated AND s.status IN ('completed', 'failed', 'skipped')
  ) THEN
    -- Nothing depends on it and no bare mark waits: only the job's counts move.
    -- stroem_settle_jobs for one job, inlined: a set-returning call over
    -- arrays cost more than the UPDATE itself on this, the commonest path.
    v_failed := CASE WHEN p_outcome = 'failed' AND NOT v_continue THEN 1 ELSE 0 END;
    UPDATE job j SET
      steps_unfinished = j.steps_unfinished - 1,
      steps_failed = j.steps_failed + v_failed,
      status = CASE WHEN j.steps_unfinished > 1 THEN 'running'
                    WHEN j.steps_failed + v_failed > 0 THEN 'failed'
                    ELSE 'completed' END,
      started_at = coalesce(j.started_at, now()),
      completed_at = CASE WHEN j.steps_unfinished > 1 THEN NULL ELSE now() END
    WHERE j.job_id = p_job_id
    RETURNING j.status INTO job_status;
  ELSIF v_propagate THEN
    SELECT * INTO v_applied FROM stroem_apply_outcomes(
      p_job_id, v_dependants, array_fill(p_outcome, ARRAY[cardinality(v_dependants)]),
      1, CASE WHEN p_outcome = 'failed' AND NOT v_continue THEN 1 ELSE 0 END);
    promoted := v_applied.promoted;
    skipped := v_applied.skipped;
    job_status := v_applied.job_status;
  END IF;
END
$$;
