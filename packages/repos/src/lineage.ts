import { type Job, jobState } from "@stroem/schema";
import { asc, eq, or } from "drizzle-orm";
import { type AuditOptions, checkActor } from "./audit-repo.js";
import { type Executor, translateErrors } from "./db.js";
import { InvalidInputError, JobNotFoundError, LineageError, StepNotFoundError } from "./errors.js";
import { COPY_JOB, type CopyJobRow, type CopyJobValues } from "./sql/lineage.js";
import { runStatement } from "./statement.js";
import { newJobId } from "./uuid7.js";
import { optionalJson, requireInt, requireText, requireUuid } from "./validate.js";

/**
 * Jobs made from other jobs: a rerun (the same job again), a restart from a
 * step (what ran before it kept), a job-level retry (the next attempt of a
 * failed job). Each is one statement (`COPY_JOB`, `sql/lineage.ts`): the new
 * job, its steps, its `job.created` audit event and its wake-up, all or
 * nothing. The new job's `sourceJobId` names the job it was made from,
 * `sourceType` says how (`rerun`, `restart`, `retry`), and it is an ordinary
 * job from then on (claimed, retried, cancelled, purged like any other).
 */

export interface RerunOptions extends AuditOptions {
  /** The new job's input (any JSON value, null included); default: the source job's. */
  input?: unknown;
}

/**
 * A new job with the source job's definition and steps, all to run again
 * (`sourceType` `rerun`), whatever the source's status. Returns its id.
 * Throws `JobNotFoundError` (no such job), `InvalidInputError`.
 */
export async function rerun(db: Executor, jobId: string, options: RerunOptions = {}): Promise<string> {
  requireUuid("jobId", jobId);
  const replaceInput = options !== null && typeof options === "object" && "input" in options;
  const input = replaceInput ? optionalJson("input", options.input) : null;
  return copy(db, jobId, "rerun", null, options, { input, replaceInput });
}

/**
 * A new job in which every step upstream of `fromStep` (its dependencies,
 * theirs, and so on) is copied as `completed` from the source job, with its
 * output and times, and every other step runs again (`sourceType`
 * `restart`, `restartFromStep`); the source job is unchanged. Returns its
 * id. Throws `JobNotFoundError`, `StepNotFoundError` (`fromStep` is not a
 * step of the job), `LineageError` `upstream_not_completed` (an upstream
 * step did not complete in the source, named in `details.steps`),
 * `InvalidInputError`; nothing is written then.
 */
export async function restart(
  db: Executor,
  jobId: string,
  options: { fromStep: string } & AuditOptions,
): Promise<string> {
  requireUuid("jobId", jobId);
  if (typeof options !== "object" || options === null) {
    throw new InvalidInputError("options", "must be an object { fromStep }");
  }
  const fromStep = requireText("fromStep", options.fromStep);
  return copy(db, jobId, "restart", fromStep, options, { input: null, replaceInput: false });
}

/**
 * The next attempt of a failed job: a new job with its definition and
 * steps (`sourceType` `retry`), `retryOfJobId` the chain's first job,
 * `retryAttempt` one more than the source's; the source's `retryJobId` is
 * set to it. A job is retried once: of two concurrent retries one creates
 * the job and the other throws `LineageError` `already_retried` (with
 * `details.retryJobId`). Throws `LineageError` `not_failed` for a job in
 * any other status, `JobNotFoundError`; nothing is written then.
 */
export async function retry(db: Executor, jobId: string, options: AuditOptions = {}): Promise<string> {
  requireUuid("jobId", jobId);
  return copy(db, jobId, "retry", null, options, { input: null, replaceInput: false });
}

async function copy(
  db: Executor,
  sourceJobId: string,
  kind: CopyJobValues["kind"],
  fromStep: string | null,
  options: AuditOptions,
  input: { input: unknown; replaceInput: boolean },
): Promise<string> {
  const actor = checkActor("actor", options?.actor);
  const values: CopyJobValues = {
    sourceJobId,
    jobId: newJobId(),
    kind,
    fromStep,
    input: input.replaceInput ? JSON.stringify(input.input ?? null) : null,
    replaceInput: input.replaceInput,
    actorType: actor.type,
    actorId: actor.id,
  };
  const [row] = await translateErrors(db, () => runStatement<CopyJobRow, CopyJobValues>(db, COPY_JOB, values));
  if (row?.job_id) return row.job_id;
  if (!row || row.source_status === null) throw new JobNotFoundError(sourceJobId);
  if (!row.step_found) throw new StepNotFoundError(sourceJobId, fromStep as string);
  if (row.not_completed.length > 0) {
    throw new LineageError("upstream_not_completed", sourceJobId, {
      stepName: fromStep as string,
      steps: row.not_completed,
    });
  }
  if (row.source_status !== "failed") {
    throw new LineageError("not_failed", sourceJobId, { currentStatus: row.source_status });
  }
  // Retried meanwhile: the statement waited for the other retry's commit (its
  // snapshot predates it), so the retry's id is read again.
  const retryJobId = row.retry_job_id ?? (await currentRetry(db, sourceJobId));
  throw new LineageError("already_retried", sourceJobId, { retryJobId: retryJobId ?? undefined });
}

/** The job that retried `jobId` now (a read after the statement that lost the race). */
async function currentRetry(db: Executor, jobId: string): Promise<string | null> {
  const rows = await translateErrors(db, () =>
    db.select({ retryJobId: jobState.retryJobId }).from(jobState).where(eq(jobState.jobId, jobId)),
  );
  return rows[0]?.retryJobId ?? null;
}

/**
 * A job's retry chain: its first attempt, then every retry of it in order
 * (`retryAttempt` 0, 1, 2, ...), whichever attempt `jobId` is. One index
 * probe (`idx_job_retry_of`) after the job itself. Throws `JobNotFoundError`.
 */
export async function attempts(db: Executor, jobId: string): Promise<Job[]> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () => db.select().from(jobState).where(eq(jobState.jobId, jobId)));
  const found = rows[0];
  if (!found) throw new JobNotFoundError(jobId);
  const root = found.retryOfJobId ?? found.jobId;
  return translateErrors(db, () =>
    db
      .select()
      .from(jobState)
      .where(or(eq(jobState.jobId, root), eq(jobState.retryOfJobId, root)))
      .orderBy(asc(jobState.retryAttempt), asc(jobState.createdAt)),
  );
}

/**
 * The jobs made from `jobId` (reruns, restarts, its retry), oldest first,
 * at most `limit` (1 to 1,000, default 100). One range of `idx_job_source_job`.
 */
export async function madeFrom(db: Executor, jobId: string, options: { limit?: number } = {}): Promise<Job[]> {
  requireUuid("jobId", jobId);
  const limit = options?.limit === undefined ? 100 : requireInt("limit", options.limit, 1, 1000);
  return translateErrors(db, () =>
    db
      .select()
      .from(jobState)
      .where(eq(jobState.sourceJobId, jobId))
      .orderBy(asc(jobState.createdAt), asc(jobState.jobId))
      .limit(limit),
  );
}
