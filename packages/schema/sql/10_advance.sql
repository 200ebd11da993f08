-- Advancing a job: the counts that say which pending steps may run, the
-- decision for each, and the settle of the job's own counts and status, in
-- SQL so that a worker's report is one round trip. The decision for a pending step mirrors `decideStep` in
-- @stroem/orchestrator; both are property-tested against `planAdvance` (the
-- full re-plan of a job) on random DAGs.
--
-- Counts kept by advancing (see the columns' comments in tables.ts):
--   step_live.deps_unfinished / deps_failed / deps_completed: of the step's
--     dependencies, how many have no applied outcome yet / failed / completed
--     (a dependency missing from the job counts as unfinished);
--   job_live.steps_unfinished: steps without an applied terminal outcome;
--   job_live.steps_failed: failed steps without continue_on_failure.
-- "Applied" means the step is terminal and `propagated`. A job of exactly
-- one step has no job_live row: its step's outcome settles it directly.
--
-- Lock order, everywhere: the job's live row first (stroem_lock_job: its
-- job_live row, or for a job of one step that step's live row), then its
-- steps' live rows. Between jobs: a child job before its parent (the
-- statement that ends a child locks its parent next: 47_server_steps.sql),
-- so a statement locking several jobs takes deeper ones first
-- (job_live.depth), then by job id.

-- The channel on which steps becoming ready are announced (pg_notify; the
-- payload is their action type), one per schema, since NOTIFY is
-- database-wide: `stroem_ready.<schema>` for the schema the tables live in
-- (the first of the search path), cut to the 63 bytes of an identifier.
-- listenForReady asks for it on its own connection.
CREATE OR REPLACE FUNCTION stroem_ready_channel() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT left('stroem_ready.' || current_schema(), 63)
$$;
--> statement-breakpoint
-- 'ready', 'skipped' or 'pending' (wait) for a pending step, from its counts.
CREATE OR REPLACE FUNCTION stroem_decide(n_deps integer, unfinished integer, failed integer, completed integer, continue_on_failure boolean)
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
-- stroem_lock_job: the first lock of every change to a job's state, and the
-- job's status. An unfinished job of zero or several steps has a job_live
-- row: locked FOR NO KEY UPDATE. Otherwise the job's step live rows are
-- locked (a job of one step: its step's row, which is its live state; a
-- finished job: steps still running, harmless), then a finished job's status
-- is read from job_result (a statement after the wait: it sees the commit
-- that was waited for). `single`: a one-step job's. NULL status: no such job.
CREATE OR REPLACE FUNCTION stroem_lock_job(p_job_id uuid, OUT status text, OUT single boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_started timestamptz;
  v_found boolean;
BEGIN
  single := false;
  SELECT l.status INTO status FROM job_live l WHERE l.job_id = p_job_id FOR NO KEY UPDATE;
  IF FOUND THEN
    RETURN;
  END IF;
  SELECT s.job_started_at INTO v_started FROM step_live s WHERE s.job_id = p_job_id FOR NO KEY UPDATE;
  v_found := FOUND;
  SELECT r.status INTO status FROM job_result r WHERE r.job_id = p_job_id;
  IF FOUND THEN
    RETURN;
  END IF;
  IF v_found THEN
    single := true;
    status := CASE WHEN v_started IS NULL THEN 'pending' ELSE 'running' END;
  END IF;
END
$$;
--> statement-breakpoint
-- Recomputes the reverse edges and every count of the given jobs from the
-- steps' graph and statuses. For steps inserted outside job creation
-- (createSteps) and for backfills; O(steps + edges) of those jobs. The
-- caller has given each job a job_live row (a job of several steps).
CREATE OR REPLACE FUNCTION stroem_recount(p_job_ids uuid[]) RETURNS void LANGUAGE sql AS $$
  WITH edges AS (
    SELECT c.job_id, e.parent, c.step_name AS child
    FROM job_step c CROSS JOIN LATERAL unnest(c.depends_on) AS e(parent)
    WHERE c.job_id = ANY(p_job_ids)
    UNION ALL
    -- An expanded loop step waits for its instances (stroem_expand_loop).
    SELECT c.job_id, c.step_name, c.loop_source FROM job_step c
    WHERE c.job_id = ANY(p_job_ids) AND c.loop_source IS NOT NULL
  ), rev AS (
    SELECT e.job_id, e.parent AS step_name, array_agg(e.child ORDER BY e.child) AS dependants
    FROM edges e GROUP BY e.job_id, e.parent
  ), counts AS (
    SELECT e.job_id, e.child AS step_name,
      count(*) FILTER (WHERE p.step_name IS NULL OR NOT p.propagated
        OR p.status NOT IN ('completed', 'failed', 'skipped'))::int AS unfinished,
      count(*) FILTER (WHERE p.propagated AND p.status = 'failed')::int AS failed,
      count(*) FILTER (WHERE p.propagated AND p.status = 'completed')::int AS completed
    FROM edges e LEFT JOIN job_step_state p ON p.job_id = e.job_id AND p.step_name = e.parent
    GROUP BY e.job_id, e.child
  ), fresh AS (
    SELECT k.job_id, k.step_name, coalesce(rev.dependants, '{}') AS dependants,
           coalesce(counts.unfinished, 0) AS unfinished, coalesce(counts.failed, 0) AS failed,
           coalesce(counts.completed, 0) AS completed
    FROM job_step k
      LEFT JOIN rev ON rev.job_id = k.job_id AND rev.step_name = k.step_name
      LEFT JOIN counts ON counts.job_id = k.job_id AND counts.step_name = k.step_name
    WHERE k.job_id = ANY(p_job_ids)
  ), defs AS (
    UPDATE job_step s SET dependants = fresh.dependants
    FROM fresh
    WHERE s.job_id = fresh.job_id AND s.step_name = fresh.step_name AND s.dependants IS DISTINCT FROM fresh.dependants
  ), steps AS (
    UPDATE step_live s SET
      dependants = fresh.dependants,
      deps_unfinished = fresh.unfinished,
      deps_failed = fresh.failed,
      deps_completed = fresh.completed
    FROM fresh
    WHERE s.job_id = fresh.job_id AND s.step_name = fresh.step_name
  )
  -- (The step counts read here do not depend on what `steps` changes.)
  UPDATE job_live j SET
    steps_unfinished = (SELECT count(*) FROM job_step_state s WHERE s.job_id = j.job_id
      AND NOT (s.propagated AND s.status IN ('completed', 'failed', 'skipped'))),
    steps_failed = (SELECT count(*) FROM job_step_state s WHERE s.job_id = j.job_id
      AND s.propagated AND s.status = 'failed' AND NOT s.continue_on_failure)
  WHERE j.job_id = ANY(p_job_ids)
$$;
--> statement-breakpoint
-- Applies outcomes to a job whose row the caller has locked and which is not
-- finished: the given ones (dependant names, each with the outcome of the
-- dependency that reached it; a NULL outcome only re-decides), plus those of
-- every terminal step not yet propagated (bare marks). Cascades skips level by
-- level, settles the job's counts and status, and notifies stroem_ready_channel()
-- (payload: the action type) for the steps it made ready.
-- Returns the promoted and skipped steps, level by level, by name within a level.
-- Generic plans (as the report functions): on PostgreSQL 18 the plan cache
-- re-planned the dependants' UPDATE on every call.
CREATE OR REPLACE FUNCTION stroem_apply_outcomes(
  p_job_id uuid, p_targets text[], p_outcomes text[], p_finished integer, p_failed integer,
  OUT promoted text[], OUT skipped text[], OUT job_status text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
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
  v_marks boolean := true;
BEGIN
  promoted := '{}';
  skipped := '{}';
  LOOP
    IF v_marks THEN
      -- Bare marks (served by idx_step_live_unpropagated, empty on the report
      -- path; and loop steps a level finished): applied, each moves to
      -- step_result (trigger step_live_ended).
      WITH done AS (
        UPDATE step_live s SET propagated = true
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
    END IF;
    EXIT WHEN cardinality(v_targets) = 0;

    WITH agg AS (
      SELECT t.name, count(t.outcome)::int AS n,
             count(*) FILTER (WHERE t.outcome = 'failed')::int AS f,
             count(*) FILTER (WHERE t.outcome = 'completed')::int AS c
      FROM unnest(v_targets, v_outcomes) AS t(name, outcome)
      GROUP BY t.name
    ), dec AS (
      SELECT s.step_name, agg.n, agg.f, agg.c,
             stroem_decide(s.deps_total, s.deps_unfinished - agg.n, s.deps_failed + agg.f,
                           s.deps_completed + agg.c, s.continue_on_failure) AS next
      FROM step_live s JOIN agg ON s.step_name = agg.name
      WHERE s.job_id = p_job_id AND s.status = 'pending'
    ), upd AS (
      -- A step skipped here moves to step_result (propagated); a loop step
      -- its last instance moved finishes instead, unpropagated (trigger
      -- step_live_loop_collected): the next pass applies it.
      UPDATE step_live s SET
        deps_unfinished = s.deps_unfinished - dec.n,
        deps_failed = s.deps_failed + dec.f,
        deps_completed = s.deps_completed + dec.c,
        status = dec.next,
        ready_at = CASE WHEN dec.next = 'ready' THEN now() ELSE s.ready_at END,
        completed_at = CASE WHEN dec.next = 'skipped' THEN now() ELSE s.completed_at END,
        propagated = (dec.next = 'skipped')
      FROM dec
      WHERE s.job_id = p_job_id AND s.step_name = dec.step_name
      RETURNING s.step_name, s.status AS next, s.dependants, stroem_route_ability(s.route) AS ability
    )
    SELECT coalesce((SELECT array_agg(u.step_name ORDER BY u.step_name) FROM upd u WHERE u.next = 'ready'), '{}'),
           coalesce((SELECT array_agg(u.step_name ORDER BY u.step_name) FROM upd u WHERE u.next = 'skipped'), '{}'),
           coalesce((SELECT array_agg(d) FROM upd u CROSS JOIN LATERAL unnest(u.dependants) AS d WHERE u.next = 'skipped'), '{}'),
           coalesce((SELECT array_agg(DISTINCT u.ability) FROM upd u WHERE u.next = 'ready'), '{}'),
           EXISTS (SELECT 1 FROM upd u WHERE u.next IN ('completed', 'failed'))
    INTO v_level_promoted, v_level_skipped, v_next, v_level_types, v_marks;
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
    SELECT j.status INTO job_status FROM job_state j WHERE j.job_id = p_job_id;
  END IF;
  IF cardinality(v_types) > 0 THEN
    PERFORM pg_notify(stroem_ready_channel(), t) FROM (SELECT DISTINCT unnest(v_types) AS t) AS types;
  END IF;
END
$$;
--> statement-breakpoint
-- Settles jobs whose counts moved: each given job's unfinished count drops by
-- p_finished and its failed count rises by p_failed (zipped arrays), and its
-- status follows from them with the CASE of jobStatusFromCounts in
-- @stroem/orchestrator. The caller holds the jobs' locks. A job of several
-- steps is its job_live row (finished, it moves to job_result: trigger
-- job_live_ended); a job of one step, whose step has just finished, gets its
-- job_result row here, started at p_started (zipped, optional: the caller
-- has it from the step's deleted live row), else when its step's result
-- says. Returns the jobs and their new status. (Reading step_result for
-- every job of a batch cost report_many 10 ms of its 16 for 50 reports in
-- a fresh database, where the cached plan of that look-up, made while
-- step_result was near empty, scanned it whole.)
CREATE OR REPLACE FUNCTION stroem_settle_jobs(p_job_ids uuid[], p_finished integer[], p_failed integer[],
  p_started timestamptz[] DEFAULT NULL)
RETURNS TABLE(job_id uuid, status text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH f AS (
    SELECT x.job_id, x.finished, x.failed, x.started
    FROM unnest(p_job_ids, p_finished, p_failed, p_started) AS x(job_id, finished, failed, started)
  ), multi AS (
    UPDATE job_live j SET
      steps_unfinished = j.steps_unfinished - f.finished,
      steps_failed = j.steps_failed + f.failed,
      status = CASE WHEN j.steps_unfinished > f.finished THEN 'running'
                    WHEN j.steps_failed + f.failed > 0 THEN 'failed'
                    ELSE 'completed' END,
      started_at = coalesce(j.started_at, now()),
      completed_at = CASE WHEN j.steps_unfinished > f.finished THEN NULL ELSE now() END
    FROM f
    -- The ANY walks the primary key: joined to the unnest alone, a batch's
    -- settle read the table whole on tables of up to some 20,000 jobs.
    WHERE j.job_id = f.job_id AND j.job_id = ANY (p_job_ids)
    RETURNING j.job_id, j.status
  ), single AS (
    INSERT INTO job_result (job_id, status, started_at, steps_unfinished, steps_failed)
    SELECT f.job_id, CASE WHEN f.failed > 0 THEN 'failed' ELSE 'completed' END,
           coalesce(f.started, (SELECT r.job_started_at FROM step_result r WHERE r.job_id = f.job_id LIMIT 1), now()),
           0, f.failed
    FROM f
    WHERE f.finished > 0 AND NOT EXISTS (SELECT 1 FROM job_live l WHERE l.job_id = f.job_id)
    ON CONFLICT DO NOTHING
    RETURNING job_result.job_id, job_result.status
  )
  SELECT m.job_id, m.status FROM multi m UNION ALL SELECT s1.job_id, s1.status FROM single s1;
END
$$;
--> statement-breakpoint
-- Advance for callers that compose a bare mark with it: locks the job row,
-- applies every outcome not yet applied, and re-decides pending steps whose
-- counts already allow a decision (steps inserted by createSteps). NULL
-- job_status: no such job.
CREATE OR REPLACE FUNCTION stroem_advance(p_job_id uuid, OUT promoted text[], OUT skipped text[], OUT job_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_undecided text[];
  v_applied record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  SELECT l.status INTO job_status FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL OR job_status IN ('completed', 'failed', 'cancelled') THEN
    RETURN;
  END IF;
  SELECT coalesce(array_agg(s.step_name), '{}') INTO v_undecided FROM step_live s
  WHERE s.job_id = p_job_id AND s.status = 'pending' AND (s.deps_unfinished = 0 OR s.deps_failed > 0);
  SELECT * INTO v_applied FROM stroem_apply_outcomes(
    p_job_id, v_undecided, array_fill(NULL::text, ARRAY[cardinality(v_undecided)]), 0, 0);
  promoted := v_applied.promoted;
  skipped := v_applied.skipped;
  job_status := v_applied.job_status;
END
$$;
--> statement-breakpoint
-- markSkipped: `pending | ready -> skipped` under the job's lock, then the
-- usual advance (its dependants see a skipped dependency). `result`: ok |
-- not_found | invalid_transition (with the step's status). `skipped` lists
-- the steps the advance skipped after it, not the step itself.
CREATE OR REPLACE FUNCTION stroem_skip_step(p_job_id uuid, p_step_name text,
  OUT result text, OUT promoted text[], OUT skipped text[], OUT job_status text, OUT step_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_applied record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  SELECT l.status INTO job_status FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  END IF;
  -- Left unpropagated: stroem_apply_outcomes applies it like a bare mark
  -- (of a finished job, it moves to step_result at once).
  UPDATE step_live s SET status = 'skipped', completed_at = now(), propagated = false
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name AND s.status IN ('pending', 'ready');
  IF NOT FOUND THEN
    SELECT s.status INTO step_status FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    result := CASE WHEN FOUND THEN 'invalid_transition' ELSE 'not_found' END;
    RETURN;
  END IF;
  result := 'ok';
  step_status := 'skipped';
  -- A finished job records the skip but moves no more (as stroem_finish_step).
  IF job_status NOT IN ('completed', 'failed', 'cancelled') THEN
    SELECT * INTO v_applied FROM stroem_apply_outcomes(p_job_id, '{}', '{}', 0, 0);
    promoted := v_applied.promoted;
    skipped := v_applied.skipped;
    job_status := v_applied.job_status;
  END IF;
END
$$;
--> statement-breakpoint
-- Room on each page for the new version of a job_live row: the claim and
-- each report of a job of several steps update it (status, counts), and
-- with free space on its page the update is HOT (it has no other index).
ALTER TABLE job_live SET (fillfactor = 70);
