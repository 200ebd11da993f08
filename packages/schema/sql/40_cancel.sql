-- Cancellation: the step status `cancelled`, cancel_requested_at (on the
-- step's live row) and the job's cancel_reason. The report functions need nothing of their own for
-- it: a finished job (cancelled included)
-- records a late outcome but moves no more, and does not retry.

-- The open steps of a job that has just ended (cancelled, or completed or
-- failed by hand), whose row the caller has locked: its pending, ready and
-- suspended steps become `cancelled` (propagated: nothing advances in a
-- finished job; never claimed, never decided), its running steps keep running with cancel_requested_at
-- set (WorkerRepo.heartbeat tells their workers; their late reports are
-- recorded and move nothing). A step a claim holds locked is waited for,
-- then seen as running (READ COMMITTED re-check). A cancelled step moves to
-- step_result (trigger step_live_ended). Returns both lists, by name.
CREATE OR REPLACE FUNCTION stroem_close_open_steps(p_job_id uuid, OUT cancelled text[], OUT cancel_requested text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  WITH upd AS (
    UPDATE step_live s SET
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
-- Ends an unfinished job whose lock the caller holds (stroem_lock_job):
-- a job of several steps through its job_live row (which then moves to
-- job_result: trigger job_live_ended), a job of one step by appending its
-- job_result row. Then stroem_close_open_steps.
CREATE OR REPLACE FUNCTION stroem_end_job(p_job_id uuid, p_single boolean, p_status text, p_output jsonb,
  p_cancel_reason text, p_error text, OUT cancelled text[], OUT cancel_requested text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  IF p_single THEN
    INSERT INTO job_result (job_id, status, started_at, output, cancel_reason, error_message, steps_unfinished)
    SELECT p_job_id, p_status, (SELECT s.job_started_at FROM step_live s WHERE s.job_id = p_job_id LIMIT 1),
           p_output, p_cancel_reason, p_error, 1;
  ELSE
    UPDATE job_live j SET status = p_status, completed_at = now(), output = p_output,
      cancel_reason = p_cancel_reason, error_message = p_error
    WHERE j.job_id = p_job_id;
  END IF;
  SELECT o.cancelled, o.cancel_requested INTO cancelled, cancel_requested FROM stroem_close_open_steps(p_job_id) o;
END
$$;
--> statement-breakpoint
-- JobRepo.cancel: locks the job (stroem_lock_job), then its steps (the lock order).
-- `pending | running -> cancelled` with completed_at and the reason, then
-- stroem_close_open_steps. A job with unfinished children (child tasks)
-- cancels them first, deepest first, with the reason "parent job <id>
-- cancelled" (stroem_cancel_children: a child's lock comes before its
-- parent's); their ends do not end this job's steps, which its own cancel
-- cancels.
-- `children`: the jobs cancelled so. `result`:
-- ok | already (a cancelled job: nothing written) | not_found |
-- invalid_transition (completed or failed; job_status says which).
CREATE OR REPLACE FUNCTION stroem_cancel_job(p_job_id uuid, p_reason text,
  OUT result text, OUT cancelled text[], OUT cancel_requested text[], OUT job_status text, OUT children uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_single boolean;
BEGIN
  cancelled := '{}';
  cancel_requested := '{}';
  children := '{}';
  children := stroem_cancel_children(p_job_id,
    'parent job ' || p_job_id || ' cancelled' || coalesce(': ' || p_reason, ''));
  SELECT l.status, l.single INTO job_status, v_single FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  ELSIF job_status = 'cancelled' THEN
    result := 'already';
    RETURN;
  ELSIF job_status IN ('completed', 'failed') THEN
    result := 'invalid_transition';
    RETURN;
  END IF;
  SELECT o.cancelled, o.cancel_requested INTO cancelled, cancel_requested
  FROM stroem_end_job(p_job_id, v_single, 'cancelled', NULL, p_reason, NULL) o;
  result := 'ok';
  job_status := 'cancelled';
END
$$;
--> statement-breakpoint
-- JobRepo.markCompleted / markFailed (the design note's hand marks): locks
-- the job row, `pending | running -> p_status` (completed, with p_output, or
-- failed) with completed_at, then stroem_close_open_steps, so workers never
-- run a step of a finished job. Its unfinished children are cancelled first,
-- as by stroem_cancel_job ("parent job <id> completed / failed by hand"):
-- `children`. `result`: ok | not_found | invalid_transition (already
-- finished; job_status says how).
CREATE OR REPLACE FUNCTION stroem_finish_job(p_job_id uuid, p_status text, p_output jsonb,
  OUT result text, OUT cancelled text[], OUT cancel_requested text[], OUT job_status text, OUT children uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_single boolean;
BEGIN
  cancelled := '{}';
  cancel_requested := '{}';
  children := '{}';
  children := stroem_cancel_children(p_job_id, 'parent job ' || p_job_id || ' ' || p_status || ' by hand');
  SELECT l.status, l.single INTO job_status, v_single FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  ELSIF job_status IN ('completed', 'failed', 'cancelled') THEN
    result := 'invalid_transition';
    RETURN;
  END IF;
  SELECT o.cancelled, o.cancel_requested INTO cancelled, cancel_requested
  FROM stroem_end_job(p_job_id, v_single, p_status, CASE WHEN p_status = 'completed' THEN p_output END, NULL, NULL) o;
  result := 'ok';
  job_status := p_status;
END
$$;
--> statement-breakpoint
-- JobStepRepo.markCancelled: a worker stops a step whose cancel was requested:
-- `running -> cancelled` (guarded like a report; the step moves to
-- step_result). Locks the job first (stroem_lock_job).
-- `result`: ok | repeated (already cancelled for this worker and attempt) |
-- not_found | invalid_transition (not running, or no cancel requested) | not_owner.
CREATE OR REPLACE FUNCTION stroem_cancel_step(p_job_id uuid, p_step_name text, p_worker_id uuid, p_attempt integer,
  OUT result text, OUT step_status text, OUT step_worker_id uuid, OUT step_attempts integer,
  OUT cancel_requested boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  IF (SELECT l.status FROM stroem_lock_job(p_job_id) l) IS NULL THEN
    result := 'not_found';
    RETURN;
  END IF;
  UPDATE step_live s SET status = 'cancelled', completed_at = now(), propagated = true
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
  FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
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
