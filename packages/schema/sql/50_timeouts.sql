-- Job deadlines. A trigger writes a job_deadline row for every job inserted
-- with timeout_secs (created_at + timeout_secs), whatever the insert path,
-- and moves it when an UPDATE sets created_at or timeout_secs.
-- stroem_sweep_timeouts' last phase walks job_deadline by deadline
-- (idx_job_deadline) and deletes each row it visits (a job that finished in
-- time leaves its row until then: nothing updates `job` when it finishes).
CREATE OR REPLACE FUNCTION stroem_job_deadline() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.timeout_secs IS NULL THEN
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
CREATE OR REPLACE TRIGGER job_deadline_insert AFTER INSERT ON job
FOR EACH ROW WHEN (NEW.timeout_secs IS NOT NULL)
EXECUTE FUNCTION stroem_job_deadline();
--> statement-breakpoint
-- Only an UPDATE that sets created_at or timeout_secs fires it (an operator
-- moving a deadline): the claim and report UPDATEs set neither.
CREATE OR REPLACE TRIGGER job_deadline_update AFTER UPDATE OF created_at, timeout_secs ON job
FOR EACH ROW WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at OR OLD.timeout_secs IS DISTINCT FROM NEW.timeout_secs)
EXECUTE FUNCTION stroem_job_deadline();
--> statement-breakpoint
-- stroem_try_lock_job: stroem_lock_job without waiting. False when another
-- transaction holds the job's lock (its job_live row, or a one-step job's
-- step row); true otherwise, the lock then held (or nothing to lock: a
-- finished job).
CREATE OR REPLACE FUNCTION stroem_try_lock_job(p_job_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  v_all integer;
  v_locked integer;
BEGIN
  PERFORM 1 FROM job_live l WHERE l.job_id = p_job_id FOR NO KEY UPDATE SKIP LOCKED;
  IF FOUND THEN
    RETURN true;
  END IF;
  IF EXISTS (SELECT 1 FROM job_live l WHERE l.job_id = p_job_id) THEN
    RETURN false;
  END IF;
  -- No job_live row: the job's step rows are its lock (a job of one step).
  SELECT count(*) INTO v_all FROM step_live s WHERE s.job_id = p_job_id;
  SELECT count(*) INTO v_locked FROM (SELECT 1 FROM step_live s WHERE s.job_id = p_job_id FOR NO KEY UPDATE SKIP LOCKED) k;
  RETURN v_locked = v_all;
END
$$;
--> statement-breakpoint
-- stroem_sweep_timeouts, in three phases, each job locked without waiting
-- (stroem_try_lock_job: a job busy with a report is swept on the next run): running
-- steps past started_at + timeout_secs fail through stroem_finish_step with
-- their own worker and attempt (the retry policy applies; kind `step`);
-- suspended gates past suspended_at + timeout_secs are rejected as timed
-- out (kind `gate`); jobs past their deadline fail and their open steps are
-- closed as on a cancel (kind `job`).
CREATE OR REPLACE FUNCTION stroem_sweep_timeouts()
RETURNS TABLE(kind text, job_id uuid, step_name text, worker_id uuid, attempt integer, outcome text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  f record;
  v_status text;
  v_single boolean;
BEGIN
  FOR r IN
    SELECT s.job_id AS jid, s.step_name AS sname, s.worker_id AS wid, s.attempts AS n, s.timeout_secs AS secs
    FROM step_live s
    WHERE s.status = 'running' AND s.timeout_secs IS NOT NULL
      AND s.started_at + make_interval(secs => s.timeout_secs) <= now()
    ORDER BY s.job_id, s.step_name
  LOOP
    CONTINUE WHEN NOT stroem_try_lock_job(r.jid);
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

  -- Suspended server steps that waited past their timeout: a gate is
  -- rejected as timed out (stroem_decide_gate), a task step waiting for its
  -- child fails (its child is then an orphan: cancelled below), unless a
  -- decision, the child's end or a cancel came first.
  FOR r IN
    SELECT s.job_id AS jid, s.step_name AS sname, s.timeout_secs AS secs, s.action_type AS atype
    FROM step_live s
    WHERE s.status = 'suspended' AND s.timeout_secs IS NOT NULL
      AND s.suspended_at + make_interval(secs => s.timeout_secs) <= now()
    ORDER BY s.job_id, s.step_name
  LOOP
    CONTINUE WHEN NOT stroem_try_lock_job(r.jid);
    IF r.atype = 'task' THEN
      SELECT * INTO f FROM stroem_finish_step(r.jid, r.sname, 'failed', jsonb_build_object('timedOut', true),
        'timed out: waiting for its child job for more than ' || r.secs || ' s (timeoutSecs)', NULL, NULL, true);
    ELSE
      SELECT * INTO f FROM stroem_decide_gate(r.jid, r.sname, false, jsonb_build_object('timedOut', true),
        'timed out: suspended for more than ' || r.secs || ' s without a decision (timeoutSecs)');
    END IF;
    CONTINUE WHEN f.result <> 'ok';
    kind := 'gate';
    job_id := r.jid;
    step_name := r.sname;
    worker_id := NULL;
    attempt := NULL;
    outcome := 'failed';
    RETURN NEXT;
  END LOOP;

  FOR r IN
    SELECT j.job_id AS jid, j.timeout_secs AS secs
    FROM job_deadline d JOIN job j ON j.job_id = d.job_id
    WHERE d.deadline <= now()
    ORDER BY j.job_id
    FOR NO KEY UPDATE OF d SKIP LOCKED
  LOOP
    CONTINUE WHEN NOT stroem_try_lock_job(r.jid);
    -- Visited once: the deadline row goes whether the job was still
    -- unfinished (it fails now) or had finished in time.
    DELETE FROM job_deadline d WHERE d.job_id = r.jid;
    SELECT l.status, l.single INTO v_status, v_single FROM stroem_lock_job(r.jid) l;
    CONTINUE WHEN v_status IS NULL OR v_status NOT IN ('pending', 'running');
    PERFORM stroem_end_job(r.jid, v_single, 'failed', NULL, NULL,
      'timed out: not finished ' || r.secs || ' s after its creation (timeoutSecs)');
    kind := 'job';
    job_id := r.jid;
    step_name := NULL;
    worker_id := NULL;
    attempt := NULL;
    outcome := 'failed';
    RETURN NEXT;
  END LOOP;

  -- Orphaned children: unfinished child jobs whose parent step has ended
  -- without them (its timeout above or earlier, its job's timeout above, a
  -- purge of the parent) are cancelled (kind `child`). A child's
  -- lock comes before its parent's, and this statement may hold parents:
  -- a child another transaction holds is skipped, not waited for (the next
  -- sweep finds it, if it is still unfinished). Its end does not touch its
  -- parent step, which has ended. Served by idx_job_live_parent.
  PERFORM set_config('stroem.cascading_cancel', 'on', true);
  FOR r IN
    SELECT l.job_id AS jid, l.parent_job_id AS pid, l.parent_step_name AS pstep
    FROM job_live l
    WHERE l.parent_job_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM step_live s WHERE s.job_id = l.parent_job_id AND s.step_name = l.parent_step_name)
    ORDER BY l.job_id
  LOOP
    CONTINUE WHEN NOT stroem_try_lock_job(r.jid);
    SELECT l.status INTO v_status FROM stroem_lock_job(r.jid) l;
    CONTINUE WHEN v_status IS NULL OR v_status NOT IN ('pending', 'running');
    PERFORM stroem_end_job(r.jid, false, 'cancelled', NULL,
      'parent step ' || r.pstep || ' of job ' || r.pid || ' ended without it', NULL);
    kind := 'child';
    job_id := r.jid;
    step_name := NULL;
    worker_id := NULL;
    attempt := NULL;
    outcome := 'cancelled';
    RETURN NEXT;
  END LOOP;
  PERFORM set_config('stroem.cascading_cancel', '', true);
END
$$;
