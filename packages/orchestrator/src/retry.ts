/**
 * Retries of a failed step: whether it runs again, and after how long. Pure:
 * the randomness of the jitter comes in as `u`, a number in [0, 1), so the
 * rule is testable and the database can apply the very same formula
 * (`stroem_retry_delay` in `packages/schema/sql/30_retry.sql`, property-tested against this one).
 */

/** How the delay grows with the attempt. */
export const RETRY_STRATEGIES = ["fixed", "exponential"] as const;
export type RetryStrategy = (typeof RETRY_STRATEGIES)[number];

/** No retry is ever scheduled further than this after the failure: one day. */
export const MAX_RETRY_DELAY_SECS = 86_400;

/** Most retries a step may have. */
export const MAX_RETRIES = 1000;

/** A step's retry policy (the `max_retries`, `retry_*` columns of `job_step`). */
export interface RetryPolicy {
  /** Runs after the first one; 0: a failure is final. */
  maxRetries: number;
  /** The delay before the first retry, in seconds (0 to `MAX_RETRY_DELAY_SECS`). */
  retryBackoffSecs: number;
  /** `fixed`: every retry waits `retryBackoffSecs`; `exponential`: doubles each attempt. */
  retryStrategy: RetryStrategy;
  /** Fraction (0 to 1) of the delay that is random: the delay is in [d * (1 - jitter), d]. */
  retryJitter: number;
}

/** The policy of a step created without one: no retry (and, if retries are set, 10 s doubling, no jitter). */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxRetries: 0,
  retryBackoffSecs: 10,
  retryStrategy: "exponential",
  retryJitter: 0,
};

/**
 * Seconds to wait before running a step again after its attempt `attempt`
 * (1 for the first run) failed:
 * `min(cap, fixed ? b : b * 2^min(attempt - 1, 60)) * (1 - jitter * u)`,
 * `b` the backoff, `cap` `MAX_RETRY_DELAY_SECS`. For a given `u` it never
 * decreases with the attempt, never exceeds the cap, and the jitter only
 * shortens it (by at most `jitter` of it). The exponent stops at 60 (any
 * backoff of 1 s or more has reached the cap long before) so the database's
 * float arithmetic never overflows.
 */
export function retryDelaySecs(policy: RetryPolicy, attempt: number, u: number): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 60);
  const base =
    policy.retryStrategy === "exponential" ? policy.retryBackoffSecs * 2 ** exponent : policy.retryBackoffSecs;
  return Math.min(base, MAX_RETRY_DELAY_SECS) * (1 - policy.retryJitter * u);
}

/** What becomes of a step whose attempt failed. */
export type RetryDecision = { retry: false } | { retry: true; delaySecs: number };

/**
 * After attempt `attempt` (1-based) of a step failed: retried while
 * `attempt <= maxRetries` (the first run plus `maxRetries` retries), after
 * `retryDelaySecs`; else the failure is final.
 */
export function decideRetry(policy: RetryPolicy, attempt: number, u: number): RetryDecision {
  return attempt <= policy.maxRetries
    ? { retry: true, delaySecs: retryDelaySecs(policy, attempt, u) }
    : { retry: false };
}
