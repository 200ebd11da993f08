import { type SQL, sql } from "drizzle-orm";

/**
 * Requeues (while the step has retries left: `attempts <= max_retries`, after
 * its retry delay, with a `retry_history` entry, as a failed report would) or
 * else fails the running steps of workers whose last heartbeat is older than
 * `staleAfterMs`. Lock order: the
 * jobs' rows first (FOR NO KEY UPDATE SKIP LOCKED: a job busy with a report
 * is rescued on the next run), then only the steps of the locked jobs, each
 * UPDATE re-checking `status = 'running'` and the worker, so a rescue never
 * overwrites a report that committed in between. Failed steps are left
 * unpropagated for the advance that follows in the same transaction.
 */
export function rescueStatement(staleAfterMs: number): SQL {
  return sql`
    with stale as (
      select s.job_id, s.step_name, s.worker_id
      from job_step s
      join worker w on w.worker_id = s.worker_id
      where s.status = 'running'
        and (w.last_heartbeat is null or w.last_heartbeat < now() - make_interval(secs => ${staleAfterMs / 1000}))
    ), jobs as (
      select j.job_id from job j
      where j.job_id in (select job_id from stale)
      order by j.job_id
      for no key update skip locked
    ), requeued as (
      update job_step s
      set status = 'ready', worker_id = null, started_at = null,
          ready_at = stroem_retry_at(s.attempts, s.retry_backoff_secs, s.retry_strategy, s.retry_jitter),
          error_message = 'worker ' || stale.worker_id || ' stopped heartbeating',
          retry_history = s.retry_history
            || stroem_retry_entry(s.attempts, s.worker_id, 'worker ' || stale.worker_id || ' stopped heartbeating', s.started_at)
      from stale
      where s.job_id = stale.job_id and s.step_name = stale.step_name and s.job_id in (select job_id from jobs)
        and s.status = 'running' and s.worker_id = stale.worker_id and s.attempts <= s.max_retries
        and s.cancel_requested_at is null
      returning s.job_id, s.step_name, s.attempts, stale.worker_id, s.action_type, 'requeued' as outcome
    ), failed as (
      update job_step s
      set status = 'failed', completed_at = now(), propagated = false,
          error_message = 'worker ' || stale.worker_id || ' stopped heartbeating; gave up after ' || s.attempts || ' attempts'
      from stale
      where s.job_id = stale.job_id and s.step_name = stale.step_name and s.job_id in (select job_id from jobs)
        and s.status = 'running' and s.worker_id = stale.worker_id and s.attempts > s.max_retries
        and s.cancel_requested_at is null
      returning s.job_id, s.step_name, s.attempts, stale.worker_id, s.action_type, 'failed' as outcome
    ), cancelled as (
      -- Its job was cancelled: never requeued, the step is cancelled (nothing advances).
      update job_step s
      set status = 'cancelled', completed_at = now(), propagated = true
      from stale
      where s.job_id = stale.job_id and s.step_name = stale.step_name and s.job_id in (select job_id from jobs)
        and s.status = 'running' and s.worker_id = stale.worker_id and s.cancel_requested_at is not null
      returning s.job_id, s.step_name, s.attempts, stale.worker_id, s.action_type, 'cancelled' as outcome
    )
    select * from requeued union all select * from failed union all select * from cancelled
    order by job_id, step_name`;
}

/** One sweep of timed-out steps and jobs (`stroem_sweep_timeouts`, migration 0009). */
export function sweepTimeoutsStatement(): SQL {
  return sql`select * from stroem_sweep_timeouts()`;
}
