import { type Flow, type FlowStep, FlowValidationError, planAdvance, validateFlow } from "@stroem/orchestrator";
import { type JobStatus, jobStepState } from "@stroem/schema";
import { eq, sql } from "drizzle-orm";
import { type Executor, transaction, translateErrors } from "./db.js";
import { InvalidInputError, JobNotFoundError } from "./errors.js";
import { ADVANCE, recountStatement } from "./sql/report.js";
import { runStatement } from "./statement.js";
import { requireUuid } from "./validate.js";

export interface AdvanceResult {
  /** Steps made ready, cascade level by level (by name within a level). */
  promoted: string[];
  /** Steps skipped because they can never run, in the same order. */
  skipped: string[];
  /** The job's status after the call. */
  jobStatus: JobStatus;
}

/**
 * Moves a job on after some of its steps were marked without advancing (bare
 * `markCompleted` / `markFailed`, a rescue's failures), in one statement
 * (`stroem_advance`): locks the job row, applies every outcome not yet
 * applied to the dependants' counts, promotes what may now run, skips what
 * never can (the whole cascade), and settles the job (`completed` or
 * `failed` with `completed_at` once every step is terminal). Also decides
 * pending steps whose counts already allow it (steps added by `createSteps`).
 * Idempotent; a finished or cancelled job is left alone. Throws `JobNotFoundError`.
 *
 * Reports through `JobStepRepo.complete` / `fail` / `reportMany` advance by
 * themselves; this is for callers that compose:
 * `db.transaction(async (tx) => { await JobStepRepo.markCompleted(tx, …); …; return JobRepo.advance(tx, jobId); })`.
 * Run at READ COMMITTED (the default).
 */
export async function advanceJob(db: Executor, jobId: string): Promise<AdvanceResult> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () =>
    runStatement<{ promoted: string[]; skipped: string[]; job_status: JobStatus | null }, { jobId: string }>(
      db,
      ADVANCE,
      { jobId },
    ),
  );
  const row = rows[0];
  if (!row?.job_status) throw new JobNotFoundError(jobId);
  return { promoted: row.promoted ?? [], skipped: row.skipped ?? [], jobStatus: row.job_status };
}

/**
 * Advances a job by the caller's `flow` (the seed-facing calls, which take
 * the graph as the design note does), in one transaction that locks the job
 * row first:
 * - the flow must be valid and name exactly the job's steps;
 * - rows that hold no graph (steps created without `dependsOn`, as the
 *   note's `NewJobStep` creates them) adopt the flow's: their `dependsOn` and
 *   `continueOnFailure` are written and the job's counts recomputed, so a
 *   join is promoted only once all its inputs are done;
 * - rows that hold a graph must hold this one (same dependencies and
 *   `continueOnFailure` per step).
 * Then advances as `advanceJob`. Throws, having written nothing:
 * `InvalidInputError`, `JobNotFoundError`, `FlowValidationError` (an invalid
 * flow, other step names, or `graph-mismatch` problems naming each step
 * whose stored graph differs).
 */
export async function advanceWithFlow(db: Executor, jobId: string, flow: Flow): Promise<AdvanceResult> {
  requireUuid("jobId", jobId);
  if (typeof flow !== "object" || flow === null) throw new InvalidInputError("flow", "must be an object");
  validateFlow(flow);
  return transaction(db, async (tx) => {
    const locked = await translateErrors(tx, () =>
      tx.execute<{ status: string | null }>(sql`select l.status from stroem_lock_job(${jobId}::uuid) l`),
    );
    if (locked.rows[0]?.status == null) throw new JobNotFoundError(jobId);
    const steps = await translateErrors(tx, () =>
      tx
        .select({
          stepName: jobStepState.stepName,
          status: jobStepState.status,
          dependsOn: jobStepState.dependsOn,
          continueOnFailure: jobStepState.continueOnFailure,
        })
        .from(jobStepState)
        .where(eq(jobStepState.jobId, jobId)),
    );
    if (steps.length > 0) {
      planAdvance(steps, flow); // throws FlowValidationError unless the names agree
      const differs = steps.filter((s) => !sameGraph(s, flow[s.stepName] as FlowStep));
      if (differs.length > 0 && steps.some((s) => s.dependsOn.length > 0)) {
        throw new FlowValidationError(
          differs.map((s) => ({
            kind: "graph-mismatch",
            step: s.stepName,
            message: `step "${s.stepName}" is stored with dependsOn [${s.dependsOn.join(", ")}]${
              s.continueOnFailure ? " and continueOnFailure" : ""
            }, the flow says [${[...((flow[s.stepName] as FlowStep).dependsOn ?? [])].join(", ")}]${
              (flow[s.stepName] as FlowStep).continueOnFailure ? " and continueOnFailure" : ""
            }`,
          })),
        );
      }
      if (differs.length > 0) {
        const graph = JSON.stringify(
          differs.map((s) => {
            const step = flow[s.stepName] as FlowStep;
            return {
              step_name: s.stepName,
              depends_on: [...(step.dependsOn ?? [])],
              continue_on_failure: step.continueOnFailure ?? false,
            };
          }),
        );
        await translateErrors(tx, () =>
          tx.execute(sql`
            with g as (
              select * from jsonb_to_recordset(${graph}::jsonb) as g(step_name text, depends_on text[], continue_on_failure boolean)
            ), live as (
              update step_live s set deps_total = cardinality(g.depends_on), continue_on_failure = g.continue_on_failure
              from g where s.job_id = ${jobId}::uuid and s.step_name = g.step_name
            )
            update job_step s set depends_on = g.depends_on, continue_on_failure = g.continue_on_failure
            from g
            where s.job_id = ${jobId}::uuid and s.step_name = g.step_name`),
        );
        await translateErrors(tx, () => tx.execute(recountStatement([jobId])));
      }
    }
    return advanceJob(tx, jobId);
  });
}

/** Whether a stored step has the flow step's graph (dependencies as a set, `continueOnFailure`). */
function sameGraph(stored: { dependsOn: string[]; continueOnFailure: boolean }, step: FlowStep): boolean {
  const deps = new Set(step.dependsOn ?? []);
  return (
    stored.continueOnFailure === (step.continueOnFailure ?? false) &&
    stored.dependsOn.length === deps.size &&
    stored.dependsOn.every((d) => deps.has(d))
  );
}
