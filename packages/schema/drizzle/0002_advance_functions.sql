-- Advancing a job, in SQL, so that a worker's report is one round trip.
-- Hand-written (drizzle-kit generate --custom): drizzle-kit does not model
-- functions. The decision for a pending step mirrors `decideStep` in
-- @stroem/orchestrator; both are property-tested against `planAdvance` (the
-- full re-plan of a job) on random DAGs.
--
-- Counts kept by advancing (see the columns' comments in tables.ts):
--   job_step.deps_unfinished / deps_failed / deps_completed: of the step's
--     dependencies, how many have no applied outcome yet / failed / completed
--     (a dependency missing from the job counts as unfinished);
--   job.steps_unfinished: steps without an applied terminal outcome;
--   job.steps_failed: failed steps without continue_on_failure.
-- "Applied" means the step is terminal and `propagated`.
--
-- Lock order, everywhere: the job row (FOR NO KEY UPDATE) before its steps.
-- FOR NO KEY UPDATE does not conflict with the KEY SHARE lock that the
-- foreign-key check of a step update takes on the job row, so a transaction
-- that updated a step twice cannot deadlock with another one's advance.

-- 'ready', 'skipped' or 'pending' (wait) for a pending step, from its counts.
CREATE FUNCTION stroem_decide(n_deps integer, unfinished integer, failed integer, completed integer, continue_on_failure boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN continue_on_failure THEN CASE WHEN unfinished = 0 THEN 'ready' ELSE 'pending' END
    WHEN failed > 0 THEN 'skipped'
    WHEN unfinished > 0 THEN 'pending'
    WHEN n_deps = 0 OR completed > 0 THEN 'ready'
    ELSE 'skipped'
  END
$$;
--> statement-breakpoint

-- Recomputes the reverse edges and every count of the given jobs from the
-- steps' graph and statuses. For steps inserted outside job creation
-- (createSteps) and for the backfill below; O(steps + edges) of those jobs.
CREATE FUNCTION stroem_recount(p_job_ids uuid[]) RETURNS void LANGUAGE sql AS $$
  WITH edges AS (
    SELECT c.job_id, e.parent, c.step_name AS child
    FROM job_step c CROSS JOIN LATERAL unnest(c.depends_on) AS e(parent)
    WHERE c.job_id = ANY(p_job_ids)
  ), rev AS (
    SELECT e.job_id, e.parent AS step_name, array_agg(e.child ORDER BY e.child) AS dependants
    FROM edges e GROUP BY e.job_id, e.parent
  ), counts AS (
    SELECT e.job_id, e.child AS step_name,
      count(*) FILTER (WHERE p.step_name IS NULL OR NOT p.propagated
        OR p.status NOT IN ('completed', 'failed', 'skipped'))::int AS unfinished,
      count(*) FILTER (WHERE p.propagated AND p.status = 'failed')::int AS failed,
      count(*) FILTER (WHERE p.propagated AND p.status = 'completed')::int AS completed
    FROM edges e LEFT JOIN job_step p ON p.job_id = e.job_id AND p.step_name = e.parent
    GROUP BY e.job_id, e.child
  ), fresh AS (
    SELECT k.job_id, k.step_name, coalesce(rev.dependants, '{}') AS dependants,
           coalesce(counts.unfinished, 0) AS unfinished, coalesce(counts.failed, 0) AS failed,
           coalesce(counts.completed, 0) AS completed
    FROM job_step k
      LEFT JOIN rev ON rev.job_id = k.job_id AND rev.step_name = k.step_name
      LEFT JOIN counts ON counts.job_id = k.job_id AND counts.step_name = k.step_name
    WHERE k.job_id = ANY(p_job_ids)
  ), steps AS (
    UPDATE job_step s SET
      dependants = fresh.dependants,
      deps_unfinished = fresh.unfinished,
      deps_failed = fresh.failed,
      deps_completed = fresh.completed
    FROM fresh
    WHERE s.job_id = fresh.job_id AND s.step_name = fresh.step_name
  )
  -- (The step counts read here do not depend on what `steps` changes.)
  UPDATE job j SET
    steps_unfinished = (SELECT count(*) FROM job_step s WHERE s.job_id = j.job_id
      AND NOT (s.propagated AND s.status IN ('completed', 'failed', 'skipped'))),
    steps_failed = (SELECT count(*) FROM job_step s WHERE s.job_id = j.job_id
      AND s.propagated AND s.status = 'failed' AND NOT s.continue_on_failure)
  WHERE j.job_id = ANY(p_job_ids)
$$;
--> statement-breakpoint

-- Settles jobs whose rows the caller has locked after `p_finished[k]` of
-- job `p_job_ids[k]`'s steps got an applied outcome (`p_failed[k]` of them
-- failing it): their counts, and their status (`running`, or `completed` /
-- `failed` with completed_at once nothing is unfinished). One UPDATE for any
-- number of jobs; returns each job's new status. PL/pgSQL rather than SQL: its
-- plan is cached per session (a SQL function's is re-planned on every call
-- before PostgreSQL 18).
CREATE FUNCTION stroem_settle_jobs(p_job_ids uuid[], p_finished integer[], p_failed integer[])
RETURNS TABLE(job_id uuid, status text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  UPDATE job j SET
    steps_unfinished = j.steps_unfinished - f.finished,
    steps_failed = j.steps_failed + f.failed,
    status = CASE WHEN j.steps_unfinished > f.finished THEN 'running'
                  WHEN j.steps_failed + f.failed > 0 THEN 'failed'
                  ELSE 'completed' END,
    started_at = coalesce(j.started_at, now()),
    completed_at = CASE WHEN j.steps_unfinished > f.finished THEN NULL ELSE now() END
  FROM unnest(p_job_ids, p_finished, p_failed) AS f(job_id, finished, failed)
  WHERE j.job_id = f.job_id
  RETURNING j.job_id, j.status;
END
$$;
--> statement-breakpoint

-- Applies outcomes to a job whose row the caller has locked and which is not
-- finished: the given ones (dependant names, each with the outcome of the
-- dependency that reached it; a NULL outcome only re-decides), plus those of
-- every terminal step not yet propagated (bare marks). Cascades skips level by
-- level, settles the job's counts and status, and notifies `stroem_ready`
-- (payload: the action type) for the steps it made ready.
-- Returns the promoted and skipped steps, level by level, by name within a level.
CREATE FUNCTION stroem_apply_outcomes(
  p_job_id uuid, p_targets text[], p_outcomes text[], p_finished integer, p_failed integer,
  OUT promoted text[], OUT skipped text[], OUT job_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_targets text[] := p_targets;
  v_outcomes text[] := p_outcomes;
  v_finished integer := p_finished;
  v_failed integer := p_failed;
  v_more_finished integer;
  v_more_failed integer;
  v_more_targets text[];
  v_more_outcomes text[];
  v_level_promoted text[];
  v_level_skipped text[];
  v_next text[];
  v_types text[] := '{}';
  v_level_types text[];
BEGIN
  promoted := '{}';
  skipped := '{}';
  -- Bare marks (served by idx_job_step_unpropagated, empty on the report path).
  WITH done AS (
    UPDATE job_step s SET propagated = true
    WHERE s.job_id = p_job_id AND NOT s.propagated AND s.status IN ('completed', 'failed', 'skipped')
    RETURNING s.status, s.dependants, s.continue_on_failure
  ), edges AS (
    SELECT d.dependant, done.status FROM done CROSS JOIN LATERAL unnest(done.dependants) AS d(dependant)
  )
  SELECT (SELECT count(*)::int FROM done),
         (SELECT count(*)::int FROM done WHERE done.status = 'failed' AND NOT done.continue_on_failure),
         coalesce(array_agg(edges.dependant ORDER BY edges.dependant, edges.status), '{}'),
         coalesce(array_agg(edges.status ORDER BY edges.dependant, edges.status), '{}')
  INTO v_more_finished, v_more_failed, v_more_targets, v_more_outcomes
  FROM edges;
  v_finished := v_finished + v_more_finished;
  v_failed := v_failed + v_more_failed;
  v_targets := v_targets || v_more_targets;
  v_outcomes := v_outcomes || v_more_outcomes;

  WHILE cardinality(v_targets) > 0 LOOP
    WITH agg AS (
      SELECT t.name, count(t.outcome)::int AS n,
             count(*) FILTER (WHERE t.outcome = 'failed')::int AS f,
             count(*) FILTER (WHERE t.outcome = 'completed')::int AS c
      FROM unnest(v_targets, v_outcomes) AS t(name, outcome)
      GROUP BY t.name
    ), dec AS (
      SELECT s.step_name, agg.n, agg.f, agg.c,
             stroem_decide(cardinality(s.depends_on), s.deps_unfinished - agg.n, s.deps_failed + agg.f,
                           s.deps_completed + agg.c, s.continue_on_failure) AS next
      FROM job_step s JOIN agg ON s.step_name = agg.name
      WHERE s.job_id = p_job_id AND s.status = 'pending'
    ), upd AS (
      UPDATE job_step s SET
        deps_unfinished = s.deps_unfinished - dec.n,
        deps_failed = s.deps_failed + dec.f,
        deps_completed = s.deps_completed + dec.c,
        status = dec.next,
        ready_at = CASE WHEN dec.next = 'ready' THEN now() ELSE s.ready_at END,
        completed_at = CASE WHEN dec.next = 'skipped' THEN now() ELSE s.completed_at END,
        propagated = (dec.next = 'skipped')
      FROM dec
      WHERE s.job_id = p_job_id AND s.step_name = dec.step_name
      RETURNING s.step_name, dec.next, s.dependants, s.action_type
    )
    SELECT coalesce((SELECT array_agg(u.step_name ORDER BY u.step_name) FROM upd u WHERE u.next = 'ready'), '{}'),
           coalesce((SELECT array_agg(u.step_name ORDER BY u.step_name) FROM upd u WHERE u.next = 'skipped'), '{}'),
           coalesce((SELECT array_agg(d) FROM upd u CROSS JOIN LATERAL unnest(u.dependants) AS d WHERE u.next = 'skipped'), '{}'),
           coalesce((SELECT array_agg(DISTINCT u.action_type) FROM upd u WHERE u.next = 'ready'), '{}')
    INTO v_level_promoted, v_level_skipped, v_next, v_level_types;
    promoted := promoted || v_level_promoted;
    skipped := skipped || v_level_skipped;
    v_types := v_types || v_level_types;
    v_finished := v_finished + cardinality(v_level_skipped);
    v_targets := v_next;
    v_outcomes := array_fill('skipped'::text, ARRAY[cardinality(v_next)]);
  END LOOP;

  IF v_finished > 0 THEN
    SELECT t.status INTO job_status FROM stroem_settle_jobs(ARRAY[p_job_id], ARRAY[v_finished], ARRAY[v_failed]) t;
  ELSE
    SELECT j.status INTO job_status FROM job j WHERE j.job_id = p_job_id;
  END IF;
  IF cardinality(v_types) > 0 THEN
    PERFORM pg_notify('stroem_ready', t) FROM (SELECT DISTINCT unnest(v_types) AS t) AS types;
  END IF;
END
$$;
--> statement-breakpoint

-- A worker's report: records a running step's outcome and, with p_propagate,
-- applies it (stroem_apply_outcomes), in one call. Locks the job row first.
-- Guarded: with p_worker_id / p_attempt the step must be held by that worker
-- in that attempt. Never raises for a refused report; `result` says:
--   ok | repeated (this worker's same outcome for this attempt is already
--   recorded: nothing written) | not_found | invalid_transition | not_owner,
-- with the step's current status, worker and attempts for the refusals.
CREATE FUNCTION stroem_finish_step(
  p_job_id uuid, p_step_name text, p_outcome text, p_output jsonb, p_error text,
  p_worker_id uuid, p_attempt integer, p_propagate boolean,
  OUT result text, OUT promoted text[], OUT skipped text[], OUT job_status text,
  OUT step_status text, OUT step_worker_id uuid, OUT step_attempts integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_job_status text;
  v_propagate boolean;
  v_dependants text[];
  v_continue boolean;
  v_applied record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  SELECT j.status INTO v_job_status FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  job_status := v_job_status;
  -- A finished job (cancelled, failed by hand) records the outcome but moves no more.
  v_propagate := p_propagate AND v_job_status NOT IN ('completed', 'failed', 'cancelled');
  UPDATE job_step s SET
    status = p_outcome,
    output = p_output,
    error_message = p_error,
    completed_at = now(),
    propagated = v_propagate
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name AND s.status = 'running'
    AND (p_worker_id IS NULL OR s.worker_id = p_worker_id)
    AND (p_attempt IS NULL OR s.attempts = p_attempt)
  RETURNING s.dependants, s.continue_on_failure, s.worker_id, s.attempts
  INTO v_dependants, v_continue, step_worker_id, step_attempts;
  IF NOT FOUND THEN
    SELECT s.status, s.worker_id, s.attempts INTO step_status, step_worker_id, step_attempts
    FROM job_step s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    IF NOT FOUND THEN
      result := 'not_found';
    ELSIF step_status = p_outcome AND p_worker_id IS NOT NULL AND p_attempt IS NOT NULL
          AND step_worker_id = p_worker_id AND step_attempts = p_attempt THEN
      result := 'repeated';
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
    SELECT t.status INTO job_status FROM stroem_settle_jobs(
      ARRAY[p_job_id], ARRAY[1], ARRAY[CASE WHEN p_outcome = 'failed' AND NOT v_continue THEN 1 ELSE 0 END]) t;
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
--> statement-breakpoint

-- Many reports in one call, set-based: the jobs' rows are locked in job_id
-- order (so concurrent batches cannot deadlock), every guarded mark is one
-- UPDATE, reports whose step has dependants are advanced one by one
-- (stroem_apply_outcomes: their promotions and skips are theirs), and the
-- jobs of the others are settled once per job. `i` in each report is echoed
-- back as `ord`. A refused report writes nothing and says why, as
-- stroem_finish_step does; `job_status` is the job's status after the batch.
CREATE FUNCTION stroem_report_many(p_reports jsonb)
RETURNS TABLE(ord integer, result text, promoted text[], skipped text[], job_status text,
              step_status text, step_worker_id uuid, step_attempts integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m record;
  v_applied record;
  v_ords integer[] := '{}';
  v_promoted text[] := '{}'; -- per accepted report, as JSON text
  v_skipped text[] := '{}';
  v_flat_jobs uuid[] := '{}';
  v_flat_failed integer[] := '{}';
  v_settle_jobs uuid[];
  v_settle_n integer[];
  v_settle_failed integer[];
  v_waiting_jobs uuid[];
  v_waiting_n integer[];
  v_waiting_failed integer[];
  k integer;
BEGIN
  PERFORM 1 FROM job j
  WHERE j.job_id IN (SELECT x.job_id FROM jsonb_to_recordset(p_reports) AS x(job_id uuid))
  ORDER BY j.job_id
  FOR NO KEY UPDATE;

  FOR m IN
    WITH r AS (
      SELECT x.* FROM jsonb_to_recordset(p_reports) AS x(
        i integer, job_id uuid, step_name text, outcome text, output jsonb, error text, worker_id uuid, attempt integer)
    ), marked AS (
      UPDATE job_step s SET
        status = r.outcome,
        output = r.output,
        error_message = r.error,
        completed_at = now(),
        propagated = j.status NOT IN ('completed', 'failed', 'cancelled')
      FROM r JOIN job j ON j.job_id = r.job_id
      WHERE s.job_id = r.job_id AND s.step_name = r.step_name AND s.status = 'running'
        AND (r.worker_id IS NULL OR s.worker_id = r.worker_id)
        AND (r.attempt IS NULL OR s.attempts = r.attempt)
      RETURNING r.i, s.job_id, s.dependants, s.continue_on_failure, r.outcome, s.propagated AS moving
    )
    SELECT * FROM marked ORDER BY marked.job_id, marked.i
  LOOP
    v_ords := v_ords || m.i;
    IF m.moving AND cardinality(m.dependants) > 0 THEN
      SELECT * INTO v_applied FROM stroem_apply_outcomes(
        m.job_id, m.dependants, array_fill(m.outcome, ARRAY[cardinality(m.dependants)]),
        1, CASE WHEN m.outcome = 'failed' AND NOT m.continue_on_failure THEN 1 ELSE 0 END);
      v_promoted := v_promoted || array_to_json(v_applied.promoted)::text;
      v_skipped := v_skipped || array_to_json(v_applied.skipped)::text;
    ELSE
      v_promoted := v_promoted || '[]'::text;
      v_skipped := v_skipped || '[]'::text;
      IF m.moving THEN
        v_flat_jobs := v_flat_jobs || m.job_id;
        v_flat_failed := v_flat_failed || CASE WHEN m.outcome = 'failed' AND NOT m.continue_on_failure THEN 1 ELSE 0 END;
      END IF;
    END IF;
  END LOOP;

  -- Reports nothing depends on: their jobs settled in one UPDATE. A job with
  -- bare marks waiting goes through stroem_apply_outcomes, which applies those too.
  WITH f AS (
    SELECT t.job_id, count(*)::integer AS n, sum(t.failed)::integer AS failed,
           EXISTS (SELECT 1 FROM job_step s WHERE s.job_id = t.job_id AND NOT s.propagated
                   AND s.status IN ('completed', 'failed', 'skipped')) AS waiting
    FROM unnest(v_flat_jobs, v_flat_failed) AS t(job_id, failed)
    GROUP BY t.job_id
  )
  SELECT coalesce(array_agg(f.job_id) FILTER (WHERE NOT f.waiting), '{}'),
         coalesce(array_agg(f.n) FILTER (WHERE NOT f.waiting), '{}'),
         coalesce(array_agg(f.failed) FILTER (WHERE NOT f.waiting), '{}'),
         coalesce(array_agg(f.job_id) FILTER (WHERE f.waiting), '{}'),
         coalesce(array_agg(f.n) FILTER (WHERE f.waiting), '{}'),
         coalesce(array_agg(f.failed) FILTER (WHERE f.waiting), '{}')
  INTO v_settle_jobs, v_settle_n, v_settle_failed, v_waiting_jobs, v_waiting_n, v_waiting_failed
  FROM f;
  PERFORM 1 FROM stroem_settle_jobs(v_settle_jobs, v_settle_n, v_settle_failed);
  FOR k IN 1 .. cardinality(v_waiting_jobs) LOOP
    PERFORM stroem_apply_outcomes(v_waiting_jobs[k], '{}', '{}', v_waiting_n[k], v_waiting_failed[k]);
  END LOOP;

  RETURN QUERY
    WITH r AS (
      SELECT x.* FROM jsonb_to_recordset(p_reports) AS x(
        i integer, job_id uuid, step_name text, outcome text, worker_id uuid, attempt integer)
    ), acc AS (
      SELECT t.* FROM unnest(v_ords, v_promoted, v_skipped) AS t(i, promoted, skipped)
    )
    SELECT r.i,
      CASE
        WHEN acc.i IS NOT NULL THEN 'ok'
        WHEN s.step_name IS NULL THEN 'not_found'
        WHEN s.status = r.outcome AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.worker_id = r.worker_id AND s.attempts = r.attempt THEN 'repeated'
        WHEN s.status <> 'running' THEN 'invalid_transition'
        ELSE 'not_owner'
      END,
      coalesce(ARRAY(SELECT jsonb_array_elements_text(acc.promoted::jsonb)), '{}'),
      coalesce(ARRAY(SELECT jsonb_array_elements_text(acc.skipped::jsonb)), '{}'),
      j.status, s.status, s.worker_id, s.attempts
    FROM r
      LEFT JOIN acc ON acc.i = r.i
      LEFT JOIN job_step s ON s.job_id = r.job_id AND s.step_name = r.step_name
      LEFT JOIN job j ON j.job_id = r.job_id
    ORDER BY r.i;
END
$$;
--> statement-breakpoint

-- Advance for callers that compose a bare mark with it: locks the job row,
-- applies every outcome not yet applied, and re-decides pending steps whose
-- counts already allow a decision (steps inserted by createSteps). NULL
-- job_status: no such job.
CREATE FUNCTION stroem_advance(p_job_id uuid, OUT promoted text[], OUT skipped text[], OUT job_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_undecided text[];
  v_applied record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  SELECT j.status INTO job_status FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND OR job_status IN ('completed', 'failed', 'cancelled') THEN
    RETURN;
  END IF;
  SELECT coalesce(array_agg(s.step_name), '{}') INTO v_undecided FROM job_step s
  WHERE s.job_id = p_job_id AND s.status = 'pending' AND (s.deps_unfinished = 0 OR s.deps_failed > 0);
  SELECT * INTO v_applied FROM stroem_apply_outcomes(
    p_job_id, v_undecided, array_fill(NULL::text, ARRAY[cardinality(v_undecided)]), 0, 0);
  promoted := v_applied.promoted;
  skipped := v_applied.skipped;
  job_status := v_applied.job_status;
END
$$;
--> statement-breakpoint

-- Backfill for databases migrated before this release.
SELECT stroem_recount(coalesce((SELECT array_agg(job_id) FROM job), '{}'));
--> statement-breakpoint

-- Room on each page for the new version of a job row: the claim and every
-- report update the row (status, counts), and with free space on its page
-- the update is HOT (no index changes). 80 leaves a fifth of each page free.
ALTER TABLE job SET (fillfactor = 80);
