import { type Flow, planAdvance } from "@stroem/orchestrator";
import { type JobStatus, jobStep } from "@stroem/schema";
import { eq } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import { JobNotFoundError } from "./errors.js";
import { ADVANCE } from "./sql/report.js";
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
 * Checks that `flow` is the graph stored on the job's steps (same names;
 * `FlowValidationError` otherwise) before advancing by the stored graph. For
 * the seed-facing calls that take the caller's flow.
 */
export async function advanceWithFlow(db: Executor, jobId: string, flow: Flow): Promise<AdvanceResult> {
  requireUuid("jobId", jobId);
  const steps = await translateErrors(db, () =>
    db.select({ stepName: jobStep.stepName, status: jobStep.status }).from(jobStep).where(eq(jobStep.jobId, jobId)),
  );
  if (steps.length > 0) planAdvance(steps, flow); // throws FlowValidationError when they disagree
  return advanceJob(db, jobId);
}
