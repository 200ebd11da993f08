-- Retries with backoff: the policy's columns are job_step.max_retries,
-- retry_backoff_secs, retry_strategy, retry_jitter and retry_history.
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
CREATE OR REPLACE FUNCTION stroem_retry_delay(p_attempt integer, p_backoff_secs integer, p_strategy text,
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
CREATE OR REPLACE FUNCTION stroem_retry_at(p_attempt integer, p_backoff_secs integer, p_strategy text, p_jitter double precision)
RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
  SELECT now() + make_interval(secs => stroem_retry_delay(p_attempt, p_backoff_secs, p_strategy, p_jitter, random()))
$$;
--> statement-breakpoint
-- One retry_history entry (a one-element array, to append with ||).
CREATE OR REPLACE FUNCTION stroem_retry_entry(p_attempt integer, p_worker_id uuid, p_error text, p_started_at timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_array(jsonb_build_object('attempt', p_attempt, 'workerId', p_worker_id, 'error', p_error,
                                              'startedAt', p_started_at, 'failedAt', now()))
$$;
