import { type SQL, type SQLChunk, sql } from "drizzle-orm";
import { statement } from "../statement.js";

/**
 * The statements of reports and advancing. Each is one call of a function
 * whose current definition is in `packages/schema/sql/` (`20_report.sql`,
 * `10_advance.sql`), so a report is one round trip whatever the job's size.
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
  /** A failure with retries left: the step went back to `ready` (`packages/schema/sql/20_report.sql`). */
  retried: boolean | null;
  /** When the retried step runs again. */
  retry_at: string | Date | null;
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

/** Placeholder values of `FINISH_STEP` (`output` as JSON text). */
export type FinishValues = Omit<FinishArgs, "output"> & { output: string | null; propagate: boolean };

/**
 * One report: guarded mark of a running step and, with `propagate`, the
 * advance of its job (dependants' counts, promotions, skips, the job's
 * status). `FINISH_STEP` binds `propagate`; `reportAndClaim` (sql/claim.ts)
 * embeds the call with `true`.
 */
export function finishCall(propagate: SQLChunk): SQL {
  return sql`select * from stroem_finish_step(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text,
    ${sql.placeholder("outcome")}::text, ${sql.placeholder("output")}::jsonb, ${sql.placeholder("error")}::text,
    ${sql.placeholder("workerId")}::uuid, ${sql.placeholder("attempt")}::int, ${propagate})`;
}

export const FINISH_STEP = statement<FinishValues>(
  "finish_step",
  finishCall(sql`${sql.placeholder("propagate")}::boolean`),
);

/** Many reports: `reports` is a JSON array of `{ i, job_id, step_name, outcome, output, error, worker_id, attempt }`. */
export const REPORT_MANY = statement<{ reports: string }>(
  "report_many",
  sql`select * from stroem_report_many(${sql.placeholder("reports")}::jsonb)`,
);

/** Advance of one job: applies outcomes not applied yet (bare marks). A NULL job_status: no such job. */
export const ADVANCE = statement<{ jobId: string }>(
  "advance",
  sql`select * from stroem_advance(${sql.placeholder("jobId")}::uuid)`,
);

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
  return sql`select pg_notify(stroem_ready_channel(), t) from unnest(${sql.param(actionTypes)}::text[]) as t`;
}

/** What `stroem_skip_step` returns. */
export type SkipRow = {
  result: "ok" | "not_found" | "invalid_transition";
  promoted: string[] | null;
  skipped: string[] | null;
  job_status: string | null;
  step_status: string | null;
};

/** `pending | ready -> skipped` of one step under its job's lock, then the advance (`stroem_skip_step`, `packages/schema/sql/10_advance.sql`). */
export const SKIP_STEP = statement<{ jobId: string; stepName: string }>(
  "skip_step",
  sql`select * from stroem_skip_step(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text)`,
);
