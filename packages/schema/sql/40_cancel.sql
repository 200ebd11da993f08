-- Cancellation: the step status `cancelled`, job_step.cancel_requested_at
-- and job.cancel_reason. The report functions need nothing of their own for
-- it: a finished job (cancelled included)
-- records a late outcome but moves no more, and does not retry.

-- The open steps of a job that has just ended (cancelled, or completed or
-- failed by hand), whose row the caller has locked: its pending, ready and
-- suspended steps become `cancelled` (propagated: nothing advances in a
-- finished job; never claimed, never decided), its running steps keep running with cancel_requested_at
-- set (WorkerRepo.heartbeat tells their workers; their late reports are
-- recorded and move nothing). A step a claim holds locked is waited for,
-- then seen as running (READ COMMITTED re-check). Returns both lists, by name.
CREATE OR REPLACE FUNCTION stroem_close_open_steps(p_job_id uuid, OUT cancelled text[], OUT cancel_requested text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  WITH upd AS (
    UPDATE job_step s SET
      status = CASE WHEN s.status = 'running' THEN s.status ELSE 'cancelled' END,
      completed_at = CASE WHEN s.status = 'running' THEN s.completed_at ELSE now() END,
      propagated = CASE WHEN s.status = 'running' THEN s.propagated ELSE true END,
      cancel_requested_at = CASE WHEN s.status = 'running' THEN now() ELSE s.cancel_requested_at END
    WHERE s.job_id = p_job_id AND s.status IN ('pending', 'ready', 'suspended', 'running')
    RETURNING s.step_name, s.status
  )
  SELECT coalesce(array_agg(u.step_name ORDER BY u.step_name) FILTER (WHERE u.status = 'cancelled'), '{}'),
         coalesce(array_agg(u.step_name ORDER BY u.step_name) FILTER (WHERE u.status = 'running'), '{}')
  INTO cancelled, cancel_requested
  FROM upd u;
END
$$;
--> statement-breakpoint
-- JobRepo.cancel: locks the job row, then its steps (the lock order).
-- `pending | running -> cancelled` with completed_at and the reason, then
-- stroem_close_open_steps. `result`:
-- ok | already (a cancelled job: nothing written) | not_found |
-- invalid_transition (completed or failed; job_status says which).
CREATE OR REPLACE FUNCTION stroem_cancel_job(p_job_id uuid, p_reason text,
  OUT result text, OUT cancelled text[], OUT cancel_requested text[], OUT job_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  cancelled := '{}';
  cancel_requested := '{}';
  SELECT j.status INTO job_status FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  ELSIF job_status = 'cancelled' THEN
    result := 'already';
    RETURN;
  ELSIF job_status IN ('completed', 'failed') THEN
    result := 'invalid_transition';
    RETURN;
  END IF;
  UPDATE job j SET status = 'cancelled', completed_at = now(), cancel_reason = p_reason WHERE j.job_id = p_job_id;
  SELECT o.cancelled, o.cancel_requested INTO cancelled, cancel_requested FROM stroem_close_open_steps(p_job_id) o;
  result := 'ok';
  job_status := 'cancelled';
END
$$;
--> statement-breakpoint
-- JobRepo.markCompleted / markFailed (the design note's hand marks): locks
-- the job row, `pending | running -> p_status` (completed, with p_output, or
-- failed) with completed_at, then stroem_close_open_steps, so workers never
-- run a step of a finished job. `result`: ok | not_found |
-- invalid_transition (already finished; job_status says how).
CREATE OR REPLACE FUNCTION stroem_finish_job(p_job_id uuid, p_status text, p_output jsonb,
  OUT result text, OUT cancelled text[], OUT cancel_requested text[], OUT job_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  cancelled := '{}';
  cancel_requested := '{}';
  SELECT j.status INTO job_status FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  ELSIF job_status IN ('completed', 'failed', 'cancelled') THEN
    result := 'invalid_transition';
    RETURN;
  END IF;
  UPDATE job j SET status = p_status, completed_at = now(),
    output = CASE WHEN p_status = 'completed' THEN p_output ELSE j.output END
  WHERE j.job_id = p_job_id;
  SELECT o.cancelled, o.cancel_requested INTO cancelled, cancel_requested FROM stroem_close_open_steps(p_job_id) o;
  result := 'ok';
  job_status := p_status;
END
$$;
--> statement-breakpoint
-- JobStepRepo.markCancelled: a worker stops a step whose cancel was requested:
-- `running -> cancelled` (guarded like a report). Locks the job row first.
-- `result`: ok | repeated (already cancelled for this worker and attempt) |
-- not_found | invalid_transition (not running, or no cancel requested) | not_owner.
CREATE OR REPLACE FUNCTION stroem_cancel_step(p_job_id uuid, p_step_name text, p_worker_id uuid, p_attempt integer,
  OUT result text, OUT step_status text, OUT step_worker_id uuid, OUT step_attempts integer,
  OUT cancel_requested boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM 1 FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  UPDATE job_step s SET status = 'cancelled', completed_at = now(), propagated = true
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name AND s.status = 'running'
    AND s.cancel_requested_at IS NOT NULL
    AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
    AND (p_attempt IS NULL OR s.attempts = p_attempt)
  RETURNING s.status, s.worker_id, s.attempts INTO step_status, step_worker_id, step_attempts;
  IF FOUND THEN
    result := 'ok';
    RETURN;
  END IF;
  SELECT s.status, s.worker_id, s.attempts, s.cancel_requested_at IS NOT NULL
  INTO step_status, step_worker_id, step_attempts, cancel_requested
  FROM job_step s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  IF NOT FOUND THEN
    result := 'not_found';
  ELSIF step_status = 'cancelled' AND p_worker_id IS NOT NULL AND p_attempt IS NOT NULL
        AND step_worker_id = p_worker_id AND step_attempts = p_attempt THEN
    result := 'repeated';
  ELSIF (p_worker_id IS NOT NULL AND step_worker_id IS DISTINCT FROM p_worker_id)
        OR (p_attempt IS NOT NULL AND step_attempts IS DISTINCT FROM p_attempt) THEN
    result := 'not_owner';
  ELSE
    result := 'invalid_transition';
  END IF;
END
$$;
