-- Approval gates: steps of a server action type (`approval`) that no worker
-- claims. The server finds them ready (JobStepRepo.readyServerSteps, the
-- claim index), suspends each (`ready -> suspended`), and someone decides:
-- approve (`suspended -> completed`) or reject (`suspended -> failed`); a
-- suspended gate with a timeout fails when it has waited that long
-- (stroem_sweep_timeouts), and its job's cancel cancels it. Every decision
-- locks the job row first (the lock order), so of an approve, a reject, a
-- timeout and a cancel that meet, the first decides and the others find
-- the step no longer suspended. A gate's state is its step_live row until
-- decided (then its step_result row).

-- stroem_suspend_step: a ready server step of an unfinished job becomes
-- `suspended` (suspended_at = now(); output = p_output when given, e.g. the
-- message the approver reads), and its job `running` if it was pending.
-- `result`: ok | repeated (suspended already: nothing written) | not_found
-- (no such job or step) | not_server (a worker's step: step_status, action
-- type in `action_type`) | invalid_transition (any other status, or its job
-- is finished: step_status, job_status).
CREATE OR REPLACE FUNCTION stroem_suspend_step(p_job_id uuid, p_step_name text, p_output jsonb,
  OUT result text, OUT step_status text, OUT job_status text, OUT action_type text, OUT suspended_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_single boolean;
  v_route text;
BEGIN
  SELECT l.status, l.single INTO job_status, v_single FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  END IF;
  SELECT s.status, s.action_type, s.suspended_at, s.route INTO step_status, action_type, suspended_at, v_route
  FROM step_live s WHERE s.job_id = p_job_id AND s.step_name = p_step_name FOR UPDATE;
  IF NOT FOUND THEN
    SELECT s.status, s.action_type, s.suspended_at INTO step_status, action_type, suspended_at
    FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  END IF;
  IF NOT FOUND THEN
    result := 'not_found';
  ELSIF action_type NOT IN ('approval') THEN
    result := 'not_server';
  ELSIF step_status = 'suspended' THEN
    result := 'repeated';
  ELSIF step_status <> 'ready' OR v_route IS DISTINCT FROM 'approval' OR job_status IN ('completed', 'failed', 'cancelled') THEN
    -- (A gate with a `when` is ready on route '@when' until the server releases it.)
    result := 'invalid_transition';
  ELSE
    UPDATE step_live s SET status = 'suspended', suspended_at = now(), output = coalesce(p_output, s.output),
      job_started_at = CASE WHEN v_single THEN coalesce(s.job_started_at, now()) END
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name
    RETURNING s.status, s.suspended_at INTO step_status, suspended_at;
    UPDATE job_live j SET status = 'running', started_at = coalesce(j.started_at, now())
    WHERE j.job_id = p_job_id AND j.status = 'pending';
    job_status := 'running';
    result := 'ok';
  END IF;
END
$$;
--> statement-breakpoint
-- stroem_decide_gate: the decision on a suspended gate: approved (p_approve)
-- it completes, rejected it fails with p_error; its output is the suspended
-- output (when an object) merged with p_output (who decided, what they
-- gave) and `approved` and `decidedAt` (the database's clock); either way through
-- stroem_finish_step (unguarded), so its job advances as after any outcome
-- (a rejection fails the job unless the gate has continue_on_failure; no
-- retry: a gate never ran). `result`: ok | not_found (job_status null: no
-- such job) | invalid_transition
-- (not suspended: decided already, timed out, cancelled, or never
-- suspended; step_status says which), with the finish's promoted and
-- skipped steps and the job's status.
CREATE OR REPLACE FUNCTION stroem_decide_gate(p_job_id uuid, p_step_name text, p_approve boolean,
  p_output jsonb, p_error text,
  OUT result text, OUT step_status text, OUT job_status text, OUT promoted text[], OUT skipped text[],
  OUT output jsonb, OUT waited_ms double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_step record;
  f record;
BEGIN
  SELECT l.status INTO job_status FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  END IF;
  SELECT s.status, s.output, s.suspended_at, s.action_type INTO v_step
  FROM step_live s WHERE s.job_id = p_job_id AND s.step_name = p_step_name FOR UPDATE;
  IF NOT FOUND THEN
    SELECT s.status, s.output, s.suspended_at, s.action_type INTO v_step
    FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  END IF;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  step_status := v_step.status;
  IF v_step.action_type <> 'approval' THEN
    -- A suspended `task` step waits for its child job, not for a person.
    result := 'not_gate';
    RETURN;
  END IF;
  IF v_step.status <> 'suspended' THEN
    result := 'invalid_transition';
    RETURN;
  END IF;
  output := CASE WHEN jsonb_typeof(v_step.output) = 'object' THEN v_step.output ELSE '{}'::jsonb END
            || coalesce(p_output, '{}'::jsonb)
            || jsonb_build_object('approved', p_approve, 'decidedAt', now());
  waited_ms := extract(epoch from now() - v_step.suspended_at) * 1000;
  SELECT * INTO f FROM stroem_finish_step(p_job_id, p_step_name,
    CASE WHEN p_approve THEN 'completed' ELSE 'failed' END, output,
    CASE WHEN p_approve THEN NULL ELSE p_error END, NULL, NULL, true);
  result := f.result;
  step_status := f.step_status;
  job_status := f.job_status;
  promoted := f.promoted;
  skipped := f.skipped;
END
$$;
