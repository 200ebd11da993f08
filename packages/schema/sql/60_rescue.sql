-- Faults: the crash budget is the step's `rescues` (on its live row).
--
-- stroem_rescue_step: gives back one running step whose worker no longer runs
-- it (the worker stopped heartbeating, or its heartbeat did not list the
-- step: a claim whose reply was lost). The caller holds the job's lock
-- (stroem_try_lock_job: the job before its steps). Guarded by the worker and the attempt, so a report
-- that committed first wins. A step whose cancel was requested becomes
-- `cancelled`. Otherwise it goes through stroem_finish_step as a failure of
-- that attempt (its retry policy decides: back to ready with a history entry,
-- or failed and the job advanced), after the crash budget: while the step's
-- `rescues` is below p_max_rescues, the rescue is free (it is not the step's
-- failure): `rescues` and `max_retries` both go up by one, so the retry is
-- granted without spending the step's own retries, and it is due at once
-- (no backoff). Returns 'requeued', 'failed', 'cancelled', or NULL when the
-- step is no longer running in that attempt for that worker.
CREATE OR REPLACE FUNCTION stroem_rescue_step(p_job_id uuid, p_step_name text, p_worker_id uuid, p_attempt integer,
                                   p_reason text, p_max_rescues integer)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_step record;
  v_free boolean;
  f record;
BEGIN
  SELECT s.cancel_requested_at, s.rescues, s.max_retries, stroem_route_ability(s.route) AS ability INTO v_step
  FROM step_live s
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name AND s.status = 'running'
    AND s.worker_id = p_worker_id AND s.attempts = p_attempt
  FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF v_step.cancel_requested_at IS NOT NULL THEN
    -- Its job was cancelled (or timed out): never requeued; nothing advances.
    UPDATE step_live s SET status = 'cancelled', completed_at = now(), propagated = true
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    RETURN 'cancelled';
  END IF;
  v_free := v_step.rescues < p_max_rescues AND v_step.max_retries < 1000;
  IF v_free THEN
    UPDATE step_live s SET rescues = s.rescues + 1, max_retries = s.max_retries + 1
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  END IF;
  SELECT * INTO f FROM stroem_finish_step(p_job_id, p_step_name, 'failed', NULL, p_reason, p_worker_id, p_attempt, true);
  IF f.result <> 'ok' THEN
    RETURN NULL;
  END IF;
  IF f.retried AND v_free THEN
    UPDATE step_live s SET ready_at = now()
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name AND s.status = 'ready';
    PERFORM pg_notify(stroem_ready_channel(), v_step.ability);
  END IF;
  RETURN CASE WHEN f.retried THEN 'requeued' ELSE 'failed' END;
END
$$;
--> statement-breakpoint
-- stroem_rescue_stale: the running steps of workers whose last heartbeat is
-- older than p_stale_after_ms (or never came), in job id order, each job row
-- locked without waiting (a job busy with a report is rescued on the next
-- run), each step through stroem_rescue_step.
CREATE OR REPLACE FUNCTION stroem_rescue_stale(p_stale_after_ms double precision, p_max_rescues integer)
RETURNS TABLE(job_id uuid, step_name text, attempts integer, worker_id uuid, action_type text, outcome text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  v_outcome text;
BEGIN
  FOR r IN
    SELECT s.job_id AS jid, s.step_name AS sname, s.worker_id AS wid, s.attempts AS n, s.action_type AS atype
    FROM step_live s
    JOIN worker w ON w.worker_id = s.worker_id
    WHERE s.status = 'running'
      AND (w.last_heartbeat IS NULL OR w.last_heartbeat < now() - make_interval(secs => p_stale_after_ms / 1000))
    ORDER BY s.job_id, s.step_name
  LOOP
    CONTINUE WHEN NOT stroem_try_lock_job(r.jid);
    v_outcome := stroem_rescue_step(r.jid, r.sname, r.wid, r.n,
      'worker ' || r.wid || ' stopped heartbeating', p_max_rescues);
    CONTINUE WHEN v_outcome IS NULL;
    job_id := r.jid;
    step_name := r.sname;
    attempts := r.n;
    worker_id := r.wid;
    action_type := r.atype;
    outcome := v_outcome;
    RETURN NEXT;
  END LOOP;
END
$$;
--> statement-breakpoint
-- stroem_heartbeat: records that the worker is alive (last_heartbeat = now(),
-- status active) and returns what it must stop: its running steps whose
-- cancel was requested, and the steps of p_running (what the worker says it
-- runs: [{ job_id, step_name, attempt }]) it no longer holds in that attempt,
-- with the reason. No row: no such worker; a row with a NULL job_id: nothing
-- to stop.
-- With p_release (the worker gave its list), a running step the row assigns
-- to this worker that the list lacks, claimed before the previous heartbeat
-- (a claim in flight, claimed after it, is never taken back), is an orphan:
-- the claim committed but its reply never reached the worker. It goes
-- through stroem_rescue_step (crash budget, then the retry policy), with a
-- `step.rescued` audit event by the worker (details: stepName, workerId,
-- attempt, outcome, reason 'claim lost'). Lock
-- order: the worker row, then each job's lock (stroem_try_lock_job: a job
-- busy with a report is looked at on the next heartbeat), then its steps.
-- The listed steps are looked up one by one by key: joined to
-- jsonb_to_recordset (planned as 100 rows), the steps were read whole on tables
-- of up to some 20,000 steps, on every heartbeat of every worker.
CREATE OR REPLACE FUNCTION stroem_heartbeat(p_worker_id uuid, p_running jsonb, p_release boolean, p_max_rescues integer)
RETURNS TABLE(job_id uuid, step_name text, attempts integer, cancel_requested_at timestamptz, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_prev timestamptz;
  r record;
  v_outcome text;
BEGIN
  SELECT w.last_heartbeat INTO v_prev FROM worker w WHERE w.worker_id = p_worker_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  UPDATE worker w SET last_heartbeat = now(), status = 'active' WHERE w.worker_id = p_worker_id;
  IF p_release AND v_prev IS NOT NULL THEN
    FOR r IN
      SELECT s.job_id AS jid, s.step_name AS sname, s.attempts AS n
      FROM step_live s
      WHERE s.worker_id = p_worker_id AND s.status = 'running' AND s.started_at < v_prev
        AND NOT EXISTS (
          SELECT 1 FROM jsonb_to_recordset(p_running) AS x(job_id uuid, step_name text, attempt integer)
          WHERE x.job_id = s.job_id AND x.step_name = s.step_name AND x.attempt = s.attempts)
      ORDER BY s.job_id, s.step_name
    LOOP
      CONTINUE WHEN NOT stroem_try_lock_job(r.jid);
      v_outcome := stroem_rescue_step(r.jid, r.sname, p_worker_id, r.n,
        'claim lost: worker ' || p_worker_id || ' did not list it in its heartbeat', p_max_rescues);
      CONTINUE WHEN v_outcome IS NULL;
      -- The same event as the stale-worker rescue's, by the worker whose heartbeat gave it back.
      INSERT INTO audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      VALUES ('worker', p_worker_id::text, 'step.rescued', 'job', r.jid::text,
              jsonb_build_object('stepName', r.sname, 'workerId', p_worker_id, 'attempt', r.n,
                                 'outcome', v_outcome, 'reason', 'claim lost'));
    END LOOP;
  END IF;
  RETURN QUERY
    SELECT s.job_id, s.step_name, s.attempts, s.cancel_requested_at, coalesce(j.cancel_reason, j.error_message)
    FROM (SELECT p_worker_id AS worker_id) w
    LEFT JOIN step_live s ON s.worker_id = w.worker_id AND s.status = 'running' AND s.cancel_requested_at IS NOT NULL
    LEFT JOIN job_state j ON j.job_id = s.job_id
    UNION ALL
    SELECT h.job_id, h.step_name, h.attempt,
      coalesce(e.failed_at, s.completed_at, now()),
      coalesce(e.error, s.error_message, 'no longer held by this worker')
    FROM jsonb_to_recordset(p_running) AS h(job_id uuid, step_name text, attempt integer)
    LEFT JOIN LATERAL (
      SELECT s1.step_name, s1.status, s1.worker_id, s1.attempts, s1.completed_at, s1.error_message, s1.retry_history
      FROM job_step_state s1
      WHERE s1.job_id = h.job_id AND s1.step_name = h.step_name
      LIMIT 1 -- per listed step, by key (a plain join read the steps whole on tables of up to some 20,000 steps)
    ) s ON true
    LEFT JOIN LATERAL (
      SELECT (x->>'failedAt')::timestamptz AS failed_at, x->>'error' AS error
      FROM jsonb_array_elements(s.retry_history) x
      WHERE (x->>'attempt')::int = h.attempt AND x->>'workerId' = p_worker_id::text
      LIMIT 1
    ) e ON true
    WHERE s.step_name IS NULL OR s.status <> 'running' OR s.worker_id IS DISTINCT FROM p_worker_id
      OR s.attempts <> h.attempt
    ORDER BY 1, 2;
END
$$;
