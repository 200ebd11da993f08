import { randomUUID } from "node:crypto";
import { flowFromEntries, initialStatus, validateFlow } from "@stroem/orchestrator";
import {
  ACTION_TYPES,
  JOB_MODES,
  JOB_STATUSES,
  type Job,
  type JobMode,
  type JobStatus,
  job,
  type NewJobStep,
  SOURCE_TYPES,
  type SourceType,
} from "@stroem/schema";
import { and, count, desc, eq, inArray, type SQL, sql } from "drizzle-orm";
import { type AdvanceResult, applyPlan } from "./advance.js";
import { type Executor, run } from "./db.js";
import { InvalidInputError, InvalidTransitionError, JobNotFoundError, WorkerNotFoundError } from "./errors.js";
import { createSteps } from "./job-step-repo.js";
import { optionalJson, optionalText, requireInt, requireOneOf, requireText, requireUuid } from "./validate.js";

export type { AdvanceResult };

export interface NewJob {
  /** Default "default". */
  workspace?: string;
  taskName: string;
  /** Default "distributed". */
  mode?: JobMode;
  input?: unknown;
  sourceType: SourceType;
  sourceId?: string | null;
  revision?: string | null;
}

/** Largest page `list` returns. */
export const MAX_PAGE = 1000;

function toJobRow(input: NewJob) {
  if (typeof input !== "object" || input === null) throw new InvalidInputError("job", "must be an object");
  return {
    jobId: randomUUID(),
    workspace: input.workspace === undefined ? "default" : requireText("workspace", input.workspace),
    taskName: requireText("taskName", input.taskName),
    mode: input.mode === undefined ? ("distributed" as const) : requireOneOf("mode", input.mode, JOB_MODES),
    input: optionalJson("input", input.input),
    sourceType: requireOneOf("sourceType", input.sourceType, SOURCE_TYPES),
    sourceId: optionalText("sourceId", input.sourceId),
    revision: optionalText("revision", input.revision),
  };
}

/** Creates a pending job and returns its id (a new UUID). Throws `InvalidInputError`. */
export async function create(db: Executor, input: NewJob): Promise<string> {
  const row = toJobRow(input);
  await run(db, () => db.insert(job).values(row));
  return row.jobId;
}

/** One step of `createWithSteps`: the flow step plus how its action runs (status comes from the flow). */
export type NewFlowStep = Omit<NewJobStep, "jobId" | "status">;

/**
 * Creates a job and all its steps in one transaction and returns the job
 * id. The steps form the flow: it is validated first (`FlowValidationError`
 * lists every problem) and nothing is written if it or any field is invalid.
 * Steps without dependencies start `ready`, the others `pending`, each row
 * storing its dependencies.
 */
export async function createWithSteps(db: Executor, input: NewJob, steps: readonly NewFlowStep[]): Promise<string> {
  const row = toJobRow(input);
  if (!Array.isArray(steps)) throw new InvalidInputError("steps", "must be an array");
  for (const [i, s] of steps.entries()) requireOneOf(`steps[${i}].actionType`, s?.actionType, ACTION_TYPES);
  const flow = flowFromEntries(
    steps.map((s) => ({
      stepName: s.stepName,
      action: s.actionName,
      dependsOn: s.dependsOn ?? [],
      continueOnFailure: s.continueOnFailure ?? false,
    })),
  );
  validateFlow(flow);
  const rows = steps.map((s) => ({ ...s, jobId: row.jobId, status: initialStatus(flow, s.stepName) }));
  await run(db, () =>
    db.transaction(async (tx) => {
      await tx.insert(job).values(row);
      await createSteps(tx, rows);
    }),
  );
  return row.jobId;
}

/** The job, or `undefined`. */
export async function get(db: Executor, jobId: string): Promise<Job | undefined> {
  requireUuid("jobId", jobId);
  const rows = await run(db, () => db.select().from(job).where(eq(job.jobId, jobId)));
  return rows[0];
}

export interface ListJobs {
  workspace?: string;
  status?: JobStatus;
  taskName?: string;
  /** 1 to 1,000. */
  limit: number;
  /** 0 or more. */
  offset: number;
}

/** A page of jobs, newest first (ties by job id, so pages never overlap), filtered by the given fields. */
export async function list(db: Executor, query: ListJobs): Promise<Job[]> {
  const limit = requireInt("limit", query.limit, 1, MAX_PAGE);
  const offset = requireInt("offset", query.offset, 0, Number.MAX_SAFE_INTEGER);
  const filters: SQL[] = [];
  if (query.workspace !== undefined) filters.push(eq(job.workspace, requireText("workspace", query.workspace)));
  if (query.status !== undefined) filters.push(eq(job.status, requireOneOf("status", query.status, JOB_STATUSES)));
  if (query.taskName !== undefined) filters.push(eq(job.taskName, requireText("taskName", query.taskName)));
  return run(db, () =>
    db
      .select()
      .from(job)
      .where(and(...filters))
      .orderBy(desc(job.createdAt), desc(job.jobId))
      .limit(limit)
      .offset(offset),
  );
}

/** Jobs per status, every status present. */
export async function countByStatus(db: Executor): Promise<Record<JobStatus, number>> {
  const rows = await run(db, () => db.select({ status: job.status, n: count() }).from(job).groupBy(job.status));
  const out = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;
  for (const r of rows) out[r.status] = r.n;
  return out;
}

async function transition(
  db: Executor,
  jobId: string,
  from: readonly JobStatus[],
  to: JobStatus,
  set: Record<string, unknown>,
  workerId?: string,
): Promise<void> {
  requireUuid("jobId", jobId);
  const rows = await run(
    db,
    () =>
      db
        .update(job)
        .set({ ...set, status: to })
        .where(and(eq(job.jobId, jobId), inArray(job.status, [...from])))
        .returning({ id: job.jobId }),
    (e) =>
      workerId && e.constraint?.includes("worker_id") ? new WorkerNotFoundError(workerId, { cause: e }) : undefined,
  );
  if (rows.length > 0) return;
  const [current] = await run(db, () => db.select({ status: job.status }).from(job).where(eq(job.jobId, jobId)));
  if (!current) throw new JobNotFoundError(jobId);
  throw new InvalidTransitionError("job", jobId, undefined, current.status, to);
}

/**
 * pending -> running, recording the worker and `started_at` (local mode: one
 * worker runs the whole job). Throws `InvalidTransitionError`,
 * `JobNotFoundError`, `WorkerNotFoundError`.
 */
export async function markRunning(db: Executor, jobId: string, workerId: string): Promise<void> {
  requireUuid("workerId", workerId);
  await transition(db, jobId, ["pending"], "running", { workerId, startedAt: sql`now()` }, workerId);
}

/** running -> completed with the output and `completed_at`. Throws `InvalidTransitionError`, `JobNotFoundError`. */
export async function markCompleted(db: Executor, jobId: string, output?: unknown): Promise<void> {
  const value = optionalJson("output", output);
  await transition(db, jobId, ["running"], "completed", { output: value, completedAt: sql`now()` });
}

/** pending or running -> failed with `completed_at`. Throws `InvalidTransitionError`, `JobNotFoundError`. */
export async function markFailed(db: Executor, jobId: string): Promise<void> {
  await transition(db, jobId, ["pending", "running"], "failed", { completedAt: sql`now()` });
}

/** Sets where the job's log is kept, in any status. Throws `JobNotFoundError`. */
export async function setLogPath(db: Executor, jobId: string, logPath: string): Promise<void> {
  requireUuid("jobId", jobId);
  const path = requireText("logPath", logPath);
  const rows = await run(db, () =>
    db.update(job).set({ logPath: path }).where(eq(job.jobId, jobId)).returning({ id: job.jobId }),
  );
  if (rows.length === 0) throw new JobNotFoundError(jobId);
}

/**
 * Moves a job on after some of its steps changed, in one transaction (a
 * savepoint inside the caller's): locks the job row, reads the steps and the
 * graph stored on them, promotes the steps that may now run, skips those
 * that never can (the whole cascade), and settles the job: `running` once a
 * step started, then `completed` or `failed` with `completed_at` when every
 * step is terminal. Idempotent: a second call changes nothing. A finished or
 * cancelled job is left alone.
 *
 * A worker reports a step with the mark and the advance in one transaction:
 * `db.transaction(async (tx) => { await JobStepRepo.markCompleted(tx, ...); return JobRepo.advance(tx, jobId); })`.
 * Run it at READ COMMITTED (the default): the lock only helps if the read
 * after it sees what the previous holder committed.
 */
export async function advance(db: Executor, jobId: string): Promise<AdvanceResult> {
  requireUuid("jobId", jobId);
  return run(db, () => db.transaction((tx) => applyPlan(tx, jobId, { promote: true, skip: true, updateJob: true })));
}
