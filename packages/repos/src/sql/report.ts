import { type SQL, sql } from "drizzle-orm";

/**
 * The statements of reports and advancing. Each is one call of a function
 * installed by migration 0002 (`packages/schema/drizzle/0002_advance_functions.sql`),
 * so a report is one round trip whatever the job's size.
 */

/** What `stroem_finish_step` and `stroem_report_many` return per report. */
export type FinishRow = {
  result: "ok" | "repeated" | "not_found" | "invalid_transition" | "not_owner";
  promoted: string[] | null;
  skipped: string[] | null;
  job_status: string | null;
  step_status: string | null;
  step_worker_id: string | null;
  step_attempts: number | null;
};

export interface FinishArgs {
  jobId: string;
  stepName: string;
  outcome: "completed" | "failed";
  /** Any JSON value; null for none. */
  output: unknown;
  error: string | null;
  workerId: string | null;
  attempt: number | null;
}

/**
 * One report: guarded mark of a running step and, with `propagate`, the
 * advance of its job (dependants' counts, promotions, skips, the job's status).
 */
export function finishStepStatement(a: FinishArgs, propagate: boolean): SQL {
  return sql`select * from stroem_finish_step(${a.jobId}::uuid, ${a.stepName}, ${a.outcome},
    ${a.output === null ? null : JSON.stringify(a.output)}::jsonb,
    ${a.error}, ${a.workerId}::uuid, ${a.attempt}::int, ${propagate})`;
}

/** Many reports: `reports` is a JSON array of `{ i, job_id, step_name, outcome, output, error, worker_id, attempt }`. */
export function reportManyStatement(reports: string): SQL {
  return sql`select * from stroem_report_many(${reports}::jsonb)`;
}

/** Advance of one job: applies outcomes not applied yet (bare marks). A NULL job_status: no such job. */
export function advanceStatement(jobId: string): SQL {
  return sql`select * from stroem_advance(${jobId}::uuid)`;
}

/** Advance of several jobs, in job id order (the lock order between jobs). */
export function advanceManyStatement(jobIds: readonly string[]): SQL {
  return sql`select a.* from unnest(${sql.param(jobIds)}::uuid[]) as j(id)
    cross join lateral stroem_advance(j.id) as a order by j.id`;
}

/** Recomputes the graph's reverse edges and every count of these jobs (after createSteps). */
export function recountStatement(jobIds: readonly string[]): SQL {
  return sql`select stroem_recount(${sql.param(jobIds)}::uuid[])`;
}

/** Wakes `listenForReady` listeners of these action types (in the caller's transaction: sent on commit). */
export function notifyReadyStatement(actionTypes: readonly string[]): SQL {
  return sql`select pg_notify('stroem_ready', t) from unnest(${sql.param(actionTypes)}::text[]) as t`;
}
