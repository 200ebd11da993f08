import { type SQL, sql } from "drizzle-orm";

const SYSTEM = { type: "system", id: null };

/**
 * Gives back the running steps of workers whose last heartbeat is older than
 * `staleAfterMs` (`stroem_rescue_stale`): job rows locked in job id order
 * without waiting (a job busy with a report is rescued on the next run), each
 * step guarded by its worker and attempt, then `stroem_rescue_step` (the
 * crash budget of `maxRescues` free rescues, then the step's retry policy
 * through `stroem_finish_step`; a step whose cancel was requested is
 * cancelled). Failed steps' jobs are advanced in the same call. Each moved
 * step gets a `step.rescued` audit event (filed under its job, by `actor`)
 * in the same statement.
 */
export function rescueStatement(
  staleAfterMs: number,
  maxRescues: number,
  actor: { type: string; id: string | null } = SYSTEM,
): SQL {
  return sql`
    with moved as (
      select * from stroem_rescue_stale(${staleAfterMs}::double precision, ${maxRescues}::int)
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
             case r.kind when 'job' then 'job.timed_out' when 'child' then 'job.cancelled' else 'step.timed_out' end,
             'job', r.job_id::text,
             jsonb_strip_nulls(jsonb_build_object('stepName', r.step_name, 'workerId', r.worker_id,
                                                  'attempt', r.attempt, 'outcome', r.outcome,
                                                  'suspended', case when r.kind = 'gate' then true end,
                                                  'orphaned', case when r.kind = 'child' then true end))
      from r
    )
    select * from r`;
}
