-- Retries with backoff (issue #11, part 2). Hand-written: drizzle-kit does not
-- model functions; the columns come from 0004_retry_policy.
--
-- The delay rule is written twice, here and as `retryDelaySecs` in
-- @stroem/orchestrator, and property-tested SQL against TS
-- (packages/repos/test/retry.test.ts): every path that retries (a worker's
-- fail, reportMany, a rescue) runs inside one statement with the step's own
-- policy and attempt, so computing the delay in TS would cost a read first.
--
-- A failed attempt is retried when the step was running, its job is not
-- finished, and attempts <= max_retries: back to `ready` with
-- ready_at = now() + delay, no worker, and an entry
-- { attempt, workerId, error, startedAt, failedAt } appended to retry_history.
-- Nothing is skipped, the job's counts do not move. A repeated guarded fail
-- of an attempt already retried is answered `repeated` (found in the history).

-- Seconds before the retry after attempt p_attempt failed; p_u in [0, 1) is the jitter's draw.
-- The same formula as retryDelaySecs in @stroem/orchestrator.
CREATE FUNCTION stroem_retry_delay(p_attempt integer, p_backoff_secs integer, p_strategy text,
                                   p_jitter double precision, p_u double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT least(
    CASE WHEN p_strategy = 'exponential'
      THEN p_backoff_secs * power(2::double precision, least(greatest(p_attempt - 1, 0), 60))
      ELSE p_backoff_secs::double precision END,
    86400::double precision)
  -- Postgres raises on a float underflow (a product of tiny factors) where JS
  -- gives 0; below 1e-150 the product cannot change 1 - product anyway.
  * CASE WHEN p_jitter < 1e-150 OR p_u < 1e-150 THEN 1 ELSE 1 - p_jitter * p_u END
$$;
--> statement-breakpoint

-- When a step whose attempt p_attempt failed runs again (random jitter).
CREATE FUNCTION stroem_retry_at(p_attempt integer, p_backoff_secs integer, p_strategy text, p_jitter double precision)
RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
  SELECT now() + make_interval(secs => stroem_retry_delay(p_attempt, p_backoff_secs, p_strategy, p_jitter, random()))
$$;
--> statement-breakpoint

-- One retry_history entry (a one-element array, to append with ||).
CREATE FUNCTION stroem_retry_entry(p_attempt integer, p_worker_id uuid, p_error text, p_started_at timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_array(jsonb_build_object('attempt', p_attempt, 'workerId', p_worker_id, 'error', p_error,
                                              'startedAt', p_started_at, 'failedAt', now()))
$$;
--> statement-breakpoint

DROP FUNCTION stroem_finish_step(uuid, text, text, jsonb, text, uuid, integer, boolean);
--> statement-breakpoint

-- As in 0003, plus the retry; returns whether it retried and when the step runs again.
CREATE FUNCTION stroem_finish_step(
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

DROP FUNCTION stroem_report_many(jsonb);
--> statement-breakpoint

-- As in 0003, plus the retry, per report.
CREATE FUNCTION stroem_report_many(p_reports jsonb)
RETURNS TABLE(ord integer, result text, promoted text[], skipped text[], job_status text,
              step_status text, step_worker_id uuid, step_attempts integer, retried boolean, retry_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m record;
  v_applied record;
  v_ords integer[] := '{}';
  v_retried boolean[] := '{}';
  v_types text[] := '{}'; -- action types of steps retried without delay
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
        status = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries) THEN 'ready' ELSE r.outcome END,
        output = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries) THEN NULL ELSE r.output END,
        error_message = r.error,
        completed_at = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries) THEN NULL ELSE now() END,
        propagated = NOT (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries) AND j.status NOT IN ('completed', 'failed', 'cancelled'),
        ready_at = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries)
          THEN stroem_retry_at(s.attempts, s.retry_backoff_secs, s.retry_strategy, s.retry_jitter) ELSE s.ready_at END,
        worker_id = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries) THEN NULL ELSE s.worker_id END,
        started_at = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries) THEN NULL ELSE s.started_at END,
        retry_history = CASE WHEN (r.outcome = 'failed' AND s.status = 'running' AND j.status NOT IN ('completed', 'failed', 'cancelled') AND s.attempts <= s.max_retries)
          THEN s.retry_history || stroem_retry_entry(s.attempts, s.worker_id, r.error, s.started_at) ELSE s.retry_history END
      FROM r JOIN job j ON j.job_id = r.job_id
      WHERE s.job_id = r.job_id AND s.step_name = r.step_name
        AND (s.status = 'running' OR (s.status = 'ready' AND r.worker_id IS NULL AND r.attempt IS NULL))
        AND (r.worker_id IS NULL OR s.worker_id = r.worker_id)
        AND (r.attempt IS NULL OR s.attempts = r.attempt)
      RETURNING r.i, s.job_id, s.dependants, s.continue_on_failure, r.outcome, s.propagated AS moving,
        s.status = 'ready' AS retried, s.action_type, s.ready_at
    )
    SELECT * FROM marked ORDER BY marked.job_id, marked.i
  LOOP
    v_ords := v_ords || m.i;
    v_retried := v_retried || m.retried;
    IF m.retried AND m.ready_at <= now() THEN
      v_types := v_types || m.action_type::text;
    END IF;
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

  IF cardinality(v_types) > 0 THEN
    PERFORM pg_notify('stroem_ready', t) FROM (SELECT DISTINCT unnest(v_types) AS t) AS types;
  END IF;

  RETURN QUERY
    WITH r AS (
      SELECT x.* FROM jsonb_to_recordset(p_reports) AS x(
        i integer, job_id uuid, step_name text, outcome text, worker_id uuid, attempt integer)
    ), acc AS (
      SELECT t.* FROM unnest(v_ords, v_promoted, v_skipped, v_retried) AS t(i, promoted, skipped, retried)
    )
    SELECT r.i,
      CASE
        WHEN acc.i IS NOT NULL THEN 'ok'
        WHEN s.step_name IS NULL THEN 'not_found'
        WHEN s.status = r.outcome AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.worker_id = r.worker_id AND s.attempts = r.attempt THEN 'repeated'
        WHEN r.outcome = 'failed' AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.retry_history @> jsonb_build_array(jsonb_build_object('attempt', r.attempt, 'workerId', r.worker_id)) THEN 'repeated'
        WHEN s.status <> 'running' THEN 'invalid_transition'
        ELSE 'not_owner'
      END,
      coalesce(ARRAY(SELECT jsonb_array_elements_text(acc.promoted::jsonb)), '{}'),
      coalesce(ARRAY(SELECT jsonb_array_elements_text(acc.skipped::jsonb)), '{}'),
      j.status, s.status, s.worker_id, s.attempts,
      coalesce(acc.retried, acc.i IS NULL AND r.outcome = 'failed' AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.retry_history @> jsonb_build_array(jsonb_build_object('attempt', r.attempt, 'workerId', r.worker_id)), false),
      CASE WHEN coalesce(acc.retried, acc.i IS NULL AND r.outcome = 'failed' AND r.worker_id IS NOT NULL AND r.attempt IS NOT NULL
             AND s.retry_history @> jsonb_build_array(jsonb_build_object('attempt', r.attempt, 'workerId', r.worker_id)), false) THEN s.ready_at END
    FROM r
      LEFT JOIN acc ON acc.i = r.i
      LEFT JOIN job_step s ON s.job_id = r.job_id AND s.step_name = r.step_name
      LEFT JOIN job j ON j.job_id = r.job_id
    ORDER BY r.i;
END
$$;
