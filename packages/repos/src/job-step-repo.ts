import type { Flow } from "@stroem/orchestrator";
import {
  ACTION_TYPES,
  type JobStep,
  jobStep,
  type NewJobStep,
  STEP_INITIAL_STATUSES,
  STEP_STATUSES,
  STEP_TERMINAL_STATUSES,
  type StepStatus,
} from "@stroem/schema";
import { and, asc, count, eq, inArray, min, notInArray, type SQL, sql } from "drizzle-orm";
import { applyPlan } from "./advance.js";
import { type Executor, run } from "./db.js";
import {
  type ConstraintViolationError,
  DuplicateStepError,
  InvalidInputError,
  InvalidTransitionError,
  JobNotFoundError,
  StepNotFoundError,
  StepOwnershipError,
  WorkerNotFoundError,
} from "./errors.js";
import { mapRow } from "./rows.js";
import {
  optionalJson,
  optionalText,
  requireCapabilities,
  requireInt,
  requireOneOf,
  requireText,
  requireUuid,
} from "./validate.js";

export type { NewJobStep };

/** Rows per INSERT: at most 10 bound values a row, so 20,000 per statement, far below Postgres' 65,535. */
const INSERT_CHUNK = 2000;
/** Most steps one batch claim may take. */
export const MAX_CLAIM_BATCH = 1000;

/**
 * Inserts steps, all or nothing: one transaction (a savepoint when `db` is
 * already one) of multi-row INSERTs of at most 2,000 rows, so a call may
 * carry tens of thousands of steps. Steps created `ready` get `ready_at =
 * now()`. An empty list is a no-op. Throws, having written nothing:
 * `InvalidInputError` for a bad field, `DuplicateStepError` for a name used
 * twice in the call or already in the job, `JobNotFoundError` for an unknown job.
 */
export async function createSteps(db: Executor, steps: readonly NewJobStep[]): Promise<void> {
  if (steps.length === 0) return;
  const rows = steps.map((s, i) => toInsertRow(s, `steps[${i}]`));
  const seen = new Set<string>();
  for (const r of rows) {
    const key = `${r.jobId}\u0000${r.stepName}`;
    if (seen.has(key)) throw new DuplicateStepError(r.jobId, r.stepName);
    seen.add(key);
  }
  await run(
    db,
    () =>
      db.transaction(async (tx) => {
        for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
          await tx.insert(jobStep).values(rows.slice(i, i + INSERT_CHUNK));
        }
      }),
    (e) => constraintError(e, rows),
  );
}

function toInsertRow(s: NewJobStep, at: string) {
  if (typeof s !== "object" || s === null) throw new InvalidInputError(at, "must be an object");
  const status = requireOneOf(`${at}.status`, s.status, STEP_INITIAL_STATUSES);
  const dependsOn = s.dependsOn ?? [];
  if (!Array.isArray(dependsOn)) throw new InvalidInputError(`${at}.dependsOn`, "must be an array of step names");
  for (const [j, d] of dependsOn.entries()) requireText(`${at}.dependsOn[${j}]`, d);
  if (s.continueOnFailure !== undefined && typeof s.continueOnFailure !== "boolean") {
    throw new InvalidInputError(`${at}.continueOnFailure`, "must be a boolean");
  }
  return {
    jobId: requireUuid(`${at}.jobId`, s.jobId),
    stepName: requireText(`${at}.stepName`, s.stepName),
    actionName: requireText(`${at}.actionName`, s.actionName),
    actionType: requireOneOf(`${at}.actionType`, s.actionType, ACTION_TYPES),
    actionImage: optionalText(`${at}.actionImage`, s.actionImage),
    actionSpec: optionalJson(`${at}.actionSpec`, s.actionSpec),
    input: optionalJson(`${at}.input`, s.input),
    status,
    dependsOn: [...dependsOn],
    continueOnFailure: s.continueOnFailure ?? false,
    readyAt: status === "ready" ? sql`now()` : null,
  };
}

function constraintError(e: ConstraintViolationError, rows: ReadonlyArray<{ jobId: string; stepName: string }>) {
  if (e.constraint === "job_step_job_id_job_job_id_fk") {
    const jobId = /\(job_id\)=\(([^)]+)\)/.exec(e.detail ?? "")?.[1];
    return new JobNotFoundError(jobId ?? rows[0]?.jobId ?? "?", { cause: e });
  }
  if (e.constraint === "job_step_job_id_step_name_pk") {
    const m = /\(job_id, step_name\)=\(([^,]+), (.*)\) already exists/.exec(e.detail ?? "");
    return new DuplicateStepError(m?.[1], m?.[2], { cause: e });
  }
  return undefined;
}

/**
 * Claims the oldest ready step whose action type the worker runs: moves it
 * to `running` with `worker_id`, `started_at` and `attempts + 1`, in one
 * statement with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any
 * number of connections never get the same step. The step's job becomes
 * `running` if it was `pending`. Returns `undefined` when nothing is ready.
 * Throws `WorkerNotFoundError` for an unregistered worker.
 */
export async function claimReadyStep(
  db: Executor,
  capabilities: readonly string[],
  workerId: string,
): Promise<JobStep | undefined> {
  const [step] = await claimReadySteps(db, capabilities, workerId, 1);
  return step;
}

/**
 * Claims up to `limit` (1 to 1,000) ready steps in one round trip, oldest
 * ready first (`ready_at`, then job id and step name), the same way as
 * `claimReadyStep`. Served by the partial index `idx_job_step_claim`, which
 * holds only ready rows: the cost does not grow with the history the table
 * keeps. Measured by `pnpm bench` (2 cores, embedded PostgreSQL 18, 100,000
 * ready steps): ~1,700 single claims/s on one connection both with and
 * without 300,000 finished steps around (the design note's claim: ~1,600/s
 * without them, ~790/s with them), and ~23,000 steps/s in batches of 50.
 */
export async function claimReadySteps(
  db: Executor,
  capabilities: readonly string[],
  workerId: string,
  limit: number,
): Promise<JobStep[]> {
  const caps = requireCapabilities("capabilities", capabilities, ACTION_TYPES);
  requireUuid("workerId", workerId);
  requireInt("limit", limit, 1, MAX_CLAIM_BATCH);
  const result = await run(
    db,
    () => db.execute<Record<string, unknown>>(claimStatement(caps, workerId, limit)),
    (e) => (e.constraint?.includes("worker_id") ? new WorkerNotFoundError(workerId, { cause: e }) : undefined),
  );
  return result.rows.map((r) => mapRow(jobStep, r));
}

/**
 * The claim statement (exported for EXPLAIN tests and benchmarks; use
 * `claimReadySteps`). The CTE fences the locked sub-select: Postgres runs it
 * once, so the UPDATE touches exactly the rows it locked (Oban's lesson).
 * The sub-select's WHERE matches the partial index's predicate and its ORDER
 * BY the index's columns, so the scan starts at the oldest ready row and
 * stops after `limit` rows it could lock.
 */
export function claimStatement(capabilities: readonly string[], workerId: string, limit: number): SQL {
  return sql`
    with next as (
      select job_id, step_name
      from job_step
      where status = 'ready' and action_type = any(${sql.param(capabilities)}::text[])
      order by ready_at, job_id, step_name
      limit ${limit}
      for update skip locked
    ), claimed as (
      update job_step s
      set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = s.attempts + 1
      from next
      where s.job_id = next.job_id and s.step_name = next.step_name
      returning s.*
    ), started_jobs as (
      -- A job starts with its first claimed step. SKIP LOCKED again: a job row
      -- locked by another claimer (who starts it) or by an advance (which
      -- settles it) must not make this claim wait.
      update job
      set status = 'running', started_at = coalesce(job.started_at, now())
      where job.job_id in (
        select j.job_id from job j
        where j.job_id in (select job_id from claimed) and j.status = 'pending'
        for update skip locked
      )
    )
    select * from claimed order by ready_at, job_id, step_name`;
}

/**
 * Changes one step's status if it is in one of `from`, else explains why not.
 * One round trip when it succeeds; the failure path reads the row to tell
 * `StepNotFoundError` from `InvalidTransitionError`.
 */
async function transition(
  db: Executor,
  jobId: string,
  stepName: string,
  from: readonly StepStatus[],
  to: StepStatus,
  set: Partial<typeof jobStep.$inferInsert> | Record<string, unknown>,
  options: { guard?: StepGuard; onConstraint?: (e: ConstraintViolationError) => Error | undefined } = {},
): Promise<void> {
  requireUuid("jobId", jobId);
  requireText("stepName", stepName);
  const guard = checkGuard(options.guard);
  const where = and(eq(jobStep.jobId, jobId), eq(jobStep.stepName, stepName));
  const rows = await run(
    db,
    () =>
      db
        .update(jobStep)
        .set({ ...set, status: to })
        .where(
          and(
            where,
            inArray(jobStep.status, [...from]),
            guard.workerId === undefined ? undefined : eq(jobStep.workerId, guard.workerId),
            guard.attempt === undefined ? undefined : eq(jobStep.attempts, guard.attempt),
          ),
        )
        .returning({ status: jobStep.status }),
    options.onConstraint,
  );
  if (rows.length > 0) return;
  const [current] = await run(db, () =>
    db
      .select({ status: jobStep.status, workerId: jobStep.workerId, attempts: jobStep.attempts })
      .from(jobStep)
      .where(where),
  );
  if (!current) throw new StepNotFoundError(jobId, stepName);
  if (!from.includes(current.status)) throw new InvalidTransitionError("step", jobId, stepName, current.status, to);
  throw new StepOwnershipError(jobId, stepName, guard, { workerId: current.workerId, attempt: current.attempts });
}

/**
 * What a worker believes about the step it reports on: that it holds it
 * (`workerId`) in the claim it made (`attempt`, the `attempts` value its claim
 * returned). When the row says otherwise (the step was rescued and claimed
 * again, or it is someone else's), the report is refused and nothing is
 * written: a late or foreign report never overwrites the real outcome.
 */
export interface StepGuard {
  workerId?: string;
  attempt?: number;
}

function checkGuard(guard: StepGuard | undefined): StepGuard {
  if (guard === undefined) return {};
  if (guard.workerId !== undefined) requireUuid("guard.workerId", guard.workerId);
  if (guard.attempt !== undefined) requireInt("guard.attempt", guard.attempt, 1, 2 ** 31 - 1);
  return guard;
}

/**
 * Moves a specific ready step to `running` for `workerId` (a directed claim,
 * without SKIP LOCKED). Throws `InvalidTransitionError` unless the step is
 * ready, `StepNotFoundError`, `WorkerNotFoundError`.
 */
export async function markRunning(db: Executor, jobId: string, stepName: string, workerId: string): Promise<void> {
  requireUuid("workerId", workerId);
  await transition(
    db,
    jobId,
    stepName,
    ["ready"],
    "running",
    { workerId, startedAt: sql`now()`, attempts: sql`${jobStep.attempts} + 1` },
    {
      onConstraint: (e) =>
        e.constraint?.includes("worker_id") ? new WorkerNotFoundError(workerId, { cause: e }) : undefined,
    },
  );
}

/**
 * Records a running step's success with its output and `completed_at`.
 * Throws `InvalidTransitionError` unless the step is running (a terminal step
 * never changes again), `StepNotFoundError`, and `StepOwnershipError` when a
 * `guard` is given and the row does not match it (pass the claiming worker and
 * the claim's `attempts`). Follow with `JobRepo.advance` in the same
 * transaction to promote what it unblocks.
 */
export async function markCompleted(
  db: Executor,
  jobId: string,
  stepName: string,
  output?: unknown,
  guard?: StepGuard,
): Promise<void> {
  const value = optionalJson("output", output);
  await transition(
    db,
    jobId,
    stepName,
    ["running"],
    "completed",
    { output: value, completedAt: sql`now()` },
    { guard },
  );
}

/**
 * Records a running step's failure with its error message and
 * `completed_at`. Same errors and guard as `markCompleted`.
 */
export async function markFailed(
  db: Executor,
  jobId: string,
  stepName: string,
  error: string,
  guard?: StepGuard,
): Promise<void> {
  if (typeof error !== "string") throw new InvalidInputError("error", "must be a string");
  await transition(
    db,
    jobId,
    stepName,
    ["running"],
    "failed",
    { errorMessage: error, completedAt: sql`now()` },
    { guard },
  );
}

/** Every step of the job, ordered by step name; `[]` for an unknown job. */
export async function getStepsForJob(db: Executor, jobId: string): Promise<JobStep[]> {
  requireUuid("jobId", jobId);
  return run(db, () => db.select().from(jobStep).where(eq(jobStep.jobId, jobId)).orderBy(asc(jobStep.stepName)));
}

/** The job's ready steps, oldest ready first. */
export async function getReadySteps(db: Executor, jobId: string): Promise<JobStep[]> {
  requireUuid("jobId", jobId);
  return run(db, () =>
    db
      .select()
      .from(jobStep)
      .where(and(eq(jobStep.jobId, jobId), eq(jobStep.status, "ready")))
      .orderBy(asc(jobStep.readyAt), asc(jobStep.stepName)),
  );
}

/** True when no step of the job is pending, ready or running (also for a job without steps). */
export async function allStepsTerminal(db: Executor, jobId: string): Promise<boolean> {
  requireUuid("jobId", jobId);
  const rows = await run(db, () =>
    db
      .select({ one: sql<number>`1` })
      .from(jobStep)
      .where(and(eq(jobStep.jobId, jobId), notInArray(jobStep.status, [...STEP_TERMINAL_STATUSES])))
      .limit(1),
  );
  return rows.length === 0;
}

/** True when some step of the job failed. */
export async function anyStepFailed(db: Executor, jobId: string): Promise<boolean> {
  requireUuid("jobId", jobId);
  const rows = await run(db, () =>
    db
      .select({ one: sql<number>`1` })
      .from(jobStep)
      .where(and(eq(jobStep.jobId, jobId), eq(jobStep.status, "failed")))
      .limit(1),
  );
  return rows.length > 0;
}

/**
 * Promotes the job's pending steps that `flow` says may run now, and returns
 * their names. Built on the orchestrator's `planAdvance`; it also skips the
 * steps that can never run, since a promotion may rest on such a skip (a
 * join whose other parent was skipped). Locks the job row for the decision,
 * so concurrent calls for one job are serialised; each UPDATE is guarded by
 * `status = 'pending'`. Throws `JobNotFoundError`, `FlowValidationError`.
 */
export async function promoteReadySteps(db: Executor, jobId: string, flow: Flow): Promise<string[]> {
  requireUuid("jobId", jobId);
  const result = await run(db, () => db.transaction((tx) => applyPlan(tx, jobId, { flow, promote: true, skip: true })));
  return result.promoted;
}

/**
 * Skips the job's pending steps that can never run under `flow` (below a
 * failure without `continueOnFailure`, or below only skipped steps), the
 * whole cascade at once, and returns their names. Promotes nothing. Locks
 * the job row like `promoteReadySteps`.
 */
export async function skipUnreachableSteps(db: Executor, jobId: string, flow: Flow): Promise<string[]> {
  requireUuid("jobId", jobId);
  const result = await run(db, () =>
    db.transaction((tx) => applyPlan(tx, jobId, { flow, promote: false, skip: true })),
  );
  return result.skipped;
}

export interface StepRef {
  jobId: string;
  stepName: string;
  /** Claims of the step so far. */
  attempts: number;
  /** The worker that held it. */
  workerId: string;
}

export interface RescueOptions {
  /** A running step is rescued when its worker's last heartbeat is older than this. */
  staleAfterMs: number;
  /** A step already claimed this many times is failed instead of requeued. Default 3. */
  maxAttempts?: number;
}

/**
 * Recovers the steps of workers that stopped heartbeating (crashed, killed,
 * partitioned): a running step whose worker's `last_heartbeat` is older than
 * `staleAfterMs` (by the database's clock) goes back to `ready` (new
 * `ready_at`, no worker), or, once claimed `maxAttempts` times, to `failed`,
 * after which its job is advanced. Rows are locked with SKIP LOCKED and each
 * UPDATE re-checks `status = 'running'`, so a rescue never overwrites a step
 * its worker just finished; a late report from the rescued worker is refused
 * when it passes its guard (`StepOwnershipError`). Safe to run from several
 * processes. Returns what it requeued and failed.
 */
export async function rescueStaleSteps(
  db: Executor,
  options: RescueOptions,
): Promise<{ requeued: StepRef[]; failed: StepRef[] }> {
  const staleAfterMs = requireInt("staleAfterMs", options.staleAfterMs, 1, 2 ** 31 - 1);
  const maxAttempts = requireInt("maxAttempts", options.maxAttempts ?? 3, 1, 1000);
  return run(db, () =>
    db.transaction(async (tx) => {
      const result = await tx.execute<{
        job_id: string;
        step_name: string;
        attempts: number;
        worker_id: string;
        outcome: string;
      }>(sql`
        with stale as (
          select s.job_id, s.step_name, s.worker_id
          from job_step s
          join worker w on w.worker_id = s.worker_id
          where s.status = 'running'
            and (w.last_heartbeat is null or w.last_heartbeat < now() - make_interval(secs => ${staleAfterMs / 1000}))
          for update of s skip locked
        ), requeued as (
          update job_step s
          set status = 'ready', ready_at = now(), worker_id = null, started_at = null
          from stale
          where s.job_id = stale.job_id and s.step_name = stale.step_name
            and s.status = 'running' and s.attempts < ${maxAttempts}
          returning s.job_id, s.step_name, s.attempts, stale.worker_id, 'requeued' as outcome
        ), failed as (
          update job_step s
          set status = 'failed', completed_at = now(),
              error_message = 'worker ' || stale.worker_id || ' stopped heartbeating; gave up after ' || s.attempts || ' attempts'
          from stale
          where s.job_id = stale.job_id and s.step_name = stale.step_name
            and s.status = 'running' and s.attempts >= ${maxAttempts}
          returning s.job_id, s.step_name, s.attempts, stale.worker_id, 'failed' as outcome
        )
        select * from requeued union all select * from failed
        order by job_id, step_name`);
      const refs = (outcome: string) =>
        result.rows
          .filter((r) => r.outcome === outcome)
          .map((r) => ({
            jobId: r.job_id,
            stepName: r.step_name,
            attempts: Number(r.attempts),
            workerId: r.worker_id,
          }));
      const failed = refs("failed");
      // A failure changes what may run: move those jobs on, as a worker's report would.
      for (const jobId of new Set(failed.map((f) => f.jobId))) {
        await applyPlan(tx, jobId, { promote: true, skip: true, updateJob: true });
      }
      return { requeued: refs("requeued"), failed };
    }),
  );
}

export interface ReadyBacklog {
  actionType: string;
  ready: number;
  oldestReadyAt: Date | null;
}

/** Ready steps by action type with the oldest `ready_at` (served by the claim index). */
export async function readyBacklog(db: Executor): Promise<ReadyBacklog[]> {
  return run(db, () =>
    db
      .select({ actionType: jobStep.actionType, ready: count(), oldestReadyAt: min(jobStep.readyAt) })
      .from(jobStep)
      .where(eq(jobStep.status, "ready"))
      .groupBy(jobStep.actionType)
      .orderBy(jobStep.actionType),
  );
}

export interface StepAudit {
  /** Steps per status, every status present. */
  byStatus: Record<StepStatus, number>;
  /** Steps claimed more than once (`attempts > 1`): none, while there is no retry. */
  claimedMoreThanOnce: number;
  /** Completed or failed steps never claimed (`attempts = 0`): none, when all went through a claim. */
  finishedUnclaimed: number;
}

/** Counts for checking a run: steps by status and claim anomalies, over all jobs or the given ones. */
export async function audit(db: Executor, jobIds?: readonly string[]): Promise<StepAudit> {
  for (const [i, id] of (jobIds ?? []).entries()) requireUuid(`jobIds[${i}]`, id);
  const filter = jobIds ? sql`${jobStep.jobId} = any(${sql.param(jobIds)}::uuid[])` : sql`true`;
  const rows = await run(db, () =>
    db
      .select({
        status: jobStep.status,
        n: count(),
        multi: sql<number>`count(*) filter (where ${jobStep.attempts} > 1)`.mapWith(Number),
        unclaimed:
          sql<number>`count(*) filter (where ${jobStep.attempts} = 0 and ${jobStep.status} in ('completed', 'failed'))`.mapWith(
            Number,
          ),
      })
      .from(jobStep)
      .where(filter)
      .groupBy(jobStep.status),
  );
  const byStatus = Object.fromEntries(STEP_STATUSES.map((s) => [s, 0])) as Record<StepStatus, number>;
  let claimedMoreThanOnce = 0;
  let finishedUnclaimed = 0;
  for (const r of rows) {
    byStatus[r.status] = r.n;
    claimedMoreThanOnce += r.multi;
    finishedUnclaimed += r.unclaimed;
  }
  return { byStatus, claimedMoreThanOnce, finishedUnclaimed };
}
