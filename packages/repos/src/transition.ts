import { type JobStatus, jobLive, jobState, jobStepState } from "@stroem/schema";
import { and, eq, inArray } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import {
  type ConstraintViolationError,
  InvalidTransitionError,
  JobNotFoundError,
  StepNotFoundError,
} from "./errors.js";

/** The row a status change is about: a job, or one step of it. */
export type TransitionTarget = { entity: "job"; jobId: string } | { entity: "step"; jobId: string; stepName: string };

/**
 * The one way a status change that was refused is explained: reads the row
 * and throws `JobNotFoundError` / `StepNotFoundError` when it is missing,
 * else `InvalidTransitionError` from its current status to `to`. Called only
 * after a guarded UPDATE changed nothing, so the happy path stays one round trip.
 */
export async function explainRefusal(db: Executor, target: TransitionTarget, to: string): Promise<never> {
  const current =
    target.entity === "job"
      ? (
          await translateErrors(db, () =>
            db.select({ status: jobState.status }).from(jobState).where(eq(jobState.jobId, target.jobId)),
          )
        )[0]
      : (
          await translateErrors(db, () =>
            db
              .select({ status: jobStepState.status })
              .from(jobStepState)
              .where(and(eq(jobStepState.jobId, target.jobId), eq(jobStepState.stepName, target.stepName))),
          )
        )[0];
  if (!current) {
    throw target.entity === "job"
      ? new JobNotFoundError(target.jobId)
      : new StepNotFoundError(target.jobId, target.stepName);
  }
  throw new InvalidTransitionError(
    target.entity,
    target.jobId,
    target.entity === "step" ? target.stepName : undefined,
    current.status,
    to,
  );
}

/**
 * Moves an unfinished job of zero or several steps (its `job_live` row) from
 * one of `from` to `to`, setting `set` too, in one guarded UPDATE; a refusal
 * (a finished job, a job of one step, whose state is its step's) is
 * explained by `explainRefusal`. (Step changes have their own statements:
 * the claim, `stroem_finish_step`.)
 */
export async function transitionJob(
  db: Executor,
  jobId: string,
  from: readonly JobStatus[],
  to: JobStatus,
  set: Record<string, unknown>,
  onConstraint?: (e: ConstraintViolationError) => Error | undefined,
): Promise<void> {
  const rows = await translateErrors(
    db,
    () =>
      db
        .update(jobLive)
        .set({ ...set, status: to })
        .where(and(eq(jobLive.jobId, jobId), inArray(jobLive.status, [...from])))
        .returning({ id: jobLive.jobId }),
    onConstraint,
  );
  if (rows.length === 0) await explainRefusal(db, { entity: "job", jobId }, to);
}
