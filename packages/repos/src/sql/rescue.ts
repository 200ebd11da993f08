import { type SQL, sql } from "drizzle-orm";

const SYSTEM = { type: "system", id: null };

/**
 * Requeues (while the step has retries left: `attempts <= max_retries`, after
 * its retry delay, with a `retry_history` entry, as a failed report would) or
 * else fails the running steps of workers whose last heartbeat is older than
 * `staleAfterMs`. Lock order: the
 * jobs' rows first (FOR NO KEY UPDATE SKIP LOCKED: a job busy with a report
 * is rescued on the next run), then only the steps of the locked jobs, each
 * UPDATE re-checking `status = 'running'` and the worker, so a rescue never
 * overwrites a report that committed in between. Failed steps are left
 * unpropagated for the advance that follows in the same transaction. Each
 * moved step gets a `step.rescued` audit event (filed under its job, by
 * `actor`) in the same statement.
 */
export function rescueStatement(staleAfterMs: number, actor: { type: string; id: string | null } = SYSTEM): SQL {
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
    ), moved as (
      select * from requeued union all select * from failed union all select * from cancelled
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${actor.type}::text, ${actor.id}::text, 'step.rescued', 'job', m.job_id::text,
             jsonb_build_object('stepName', m.step_name, 'workerId', m.worker_id, 'attempt', m.attempts,
                                'outcome', m.outcome)
      from moved m
    )
    select * from moved order by job_id, step_name`;
}

/**
 * One sweep of timed-out steps and jobs (`stroem_sweep_timeouts`), with a
 * `step.timed_out` or `job.timed_out` audit event (filed under the job, by
 * `actor`) per row it returns, in the same statement.
 */
export function sweepTimeoutsStatement(actor: { type: string; id: string | null } = SYSTEM): SQL {
  return sql`
    with r as (select * from stroem_sweep_timeouts()), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${actor.type}::text, ${actor.id}::text,
             case r.kind when 'step' then 'step.timed_out' else 'job.timed_out' end, 'job', r.job_id::text,
             jsonb_strip_nulls(jsonb_build_object('stepName', r.step_name, 'workerId', r.worker_id,
                                                  'attempt', r.attempt, 'outcome', r.outcome))
      from r
    )
    select * from r`;
}
