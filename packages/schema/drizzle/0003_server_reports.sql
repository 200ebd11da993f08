-- Server-side reports (issue #11, part 1). Hand-written: drizzle-kit does not
-- model functions.
--
-- stroem_finish_step / stroem_report_many: a report without a guard (no
-- worker, no attempt: the Strøm server finishing a step no worker runs)
-- accepts a `ready` step as well as a `running` one; a guarded report still
-- needs `running`, held by that worker in that attempt. Otherwise unchanged
-- from 0002.

CREATE OR REPLACE FUNCTION stroem_finish_step(
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
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name
    AND (s.status = 'running' OR (s.status = 'ready' AND p_worker_id IS NULL AND p_attempt IS NULL))
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

CREATE OR REPLACE FUNCTION stroem_report_many(p_reports jsonb)
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
      WHERE s.job_id = r.job_id AND s.step_name = r.step_name
        AND (s.status = 'running' OR (s.status = 'ready' AND r.worker_id IS NULL AND r.attempt IS NULL))
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

-- markSkipped: `pending | ready -> skipped` under the job's lock, then the
-- usual advance (its dependants see a skipped dependency). `result`: ok |
-- not_found | invalid_transition (with the step's status). `skipped` lists
-- the steps the advance skipped after it, not the step itself.
CREATE FUNCTION stroem_skip_step(p_job_id uuid, p_step_name text,
  OUT result text, OUT promoted text[], OUT skipped text[], OUT job_status text, OUT step_status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_applied record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  SELECT j.status INTO job_status FROM job j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  -- Left unpropagated: stroem_apply_outcomes applies it like a bare mark.
  UPDATE job_step s SET status = 'skipped', completed_at = now(), propagated = false
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name AND s.status IN ('pending', 'ready');
  IF NOT FOUND THEN
    SELECT s.status INTO step_status FROM job_step s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
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
