-- Timeouts (issue #11, part 4). Hand-written: drizzle-kit does not model
-- functions; the columns and partial indexes come from 0008_timeouts.
--
-- stroem_sweep_timeouts: one call does a whole sweep, in two phases.
-- 1. Running steps past started_at + timeout_secs (idx_job_step_timeout: the
--    running steps with a timeout), in job id order, each job row locked
--    without waiting (a job busy with a report is swept on the next run):
--    each goes through stroem_finish_step as the failure of its run, guarded
--    by its worker and attempt, so the retry policy applies (back to ready
--    with a history entry, or failed and the job advanced) and a report that
--    committed first wins.
-- 2. Unfinished jobs past created_at + timeout_secs (idx_job_timeout: the
--    unfinished jobs with a timeout), locked SKIP LOCKED in job id order:
--    `failed` with completed_at and error_message; their pending and ready
--    steps `cancelled`, their running steps flagged cancel_requested_at (the
--    workers learn it from their heartbeat, as for a cancel).
-- Locks are taken in job id order within each phase and never waited for in
-- the second, so the sweep cannot deadlock with reports (also in job id order).
CREATE FUNCTION stroem_sweep_timeouts()
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
    FROM job j
    WHERE j.completed_at IS NULL AND j.timeout_secs IS NOT NULL
      AND j.created_at + make_interval(secs => j.timeout_secs) <= now()
    ORDER BY j.job_id
    FOR NO KEY UPDATE SKIP LOCKED
  LOOP
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
