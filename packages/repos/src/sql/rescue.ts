import { type SQL, sql } from "drizzle-orm";

/**
 * Gives back the running steps of workers whose last heartbeat is older than
 * `staleAfterMs` (`stroem_rescue_stale`): job rows locked in job id order
 * without waiting (a job busy with a report is rescued on the next run), each
 * step guarded by its worker and attempt, then `stroem_rescue_step` (the
 * crash budget of `maxRescues` free rescues, then the step's retry policy
 * through `stroem_finish_step`; a step whose cancel was requested is
 * cancelled). Failed steps' jobs are advanced in the same call.
 */
export function rescueStatement(staleAfterMs: number, maxRescues: number): SQL {
  return sql`select * from stroem_rescue_stale(${staleAfterMs}::double precision, ${maxRescues}::int)`;
}

/** One sweep of timed-out steps and jobs (`stroem_sweep_timeouts`, migration 0009). */
export function sweepTimeoutsStatement(): SQL {
  return sql`select * from stroem_sweep_timeouts()`;
}
