import { toFlow, validateFlow } from "@stroem/orchestrator";
import {
  CONSTRAINTS,
  CREATION_SOURCE_TYPES,
  JOB_MODES,
  JOB_STATUSES,
  type Job,
  type JobMode,
  type JobStatus,
  job,
  jobState,
  type NewFlowStep,
  RECORD_LIMITS,
} from "@stroem/schema";
import { and, count, desc, eq, type SQL, sql } from "drizzle-orm";
import { type AdvanceResult, advanceJob } from "./advance.js";
import { type AuditOptions, checkActor } from "./audit-repo.js";
import { type Executor, translateErrors } from "./db.js";
import { InvalidInputError, InvalidTransitionError, JobNotFoundError, WorkerNotFoundError } from "./errors.js";
import { mapRow } from "./rows.js";
import { checkScope, type JobScope } from "./search.js";
import { CANCEL_JOB, type CancelJobRow, FINISH_JOB, type FinishJobRow } from "./sql/cancel.js";
import { CREATE_JOBS, CREATE_JOBS_KEYED, JOBS_BY_KEYS } from "./sql/create.js";
import { searchStatement } from "./sql/search.js";
import { runStatement } from "./statement.js";
import { checkFlowStep, stepConstraintError } from "./steps/create.js";
import { transitionJob } from "./transition.js";
import { newJobId } from "./uuid7.js";
import { optionalJson, optionalText, requireInt, requireOneOf, requireText, requireUuid } from "./validate.js";

export type { AdvanceResult, NewFlowStep };

export interface NewJob {
  /** Default "default". */
  workspace?: string;
  taskName: string;
  /** Default "distributed". */
  mode?: JobMode;
  input?: unknown;
  /** How it was started; the jobs made from a job (`rerun`, `restart`, `retry`) come from `rerun()`, `restart()`, `retry()`. */
  sourceType: (typeof CREATION_SOURCE_TYPES)[number];
  sourceId?: string | null;
  revision?: string | null;
  /** The job fails once it is this many seconds old and not finished (`JobStepRepo.sweepTimeouts`); default none. */
  timeoutSecs?: number | null;
  /**
   * With `createWithSteps` / `createMany`: a key (1 to 512 characters,
   * unique per workspace) that makes a repeated create (a retried webhook, a
   * client's retry after a lost reply) return the first job instead of
   * creating another, for `idempotencyTtlSecs`.
   */
  idempotencyKey?: string | null;
  /** How long the key holds, seconds: 1 to 30 days; default one day. */
  idempotencyTtlSecs?: number;
}

/** Longest an idempotency key holds, seconds (30 days), and the default (a day). */
export const IDEMPOTENCY_TTL = { defaultSecs: 86_400, maxSecs: 30 * 86_400 } as const;

/** Largest page `list` returns. */
export const MAX_PAGE = 1000;

/** A job's fields, checked, with a new id; `at` prefixes field names in errors. Throws `InvalidInputError`. */
function toJobRow(input: NewJob, at = "") {
  if (typeof input !== "object" || input === null) throw new InvalidInputError(at || "job", "must be an object");
  return {
    // Random (v4), not time-ordered: see newJobId.
    jobId: newJobId(),
    workspace: input.workspace === undefined ? "default" : requireText(`${at}workspace`, input.workspace),
    taskName: requireText(`${at}taskName`, input.taskName),
    mode: input.mode === undefined ? ("distributed" as const) : requireOneOf(`${at}mode`, input.mode, JOB_MODES),
    input: optionalJson(`${at}input`, input.input),
    // rerun / restart / retry are made by rerun(), restart(), retry(), with their links.
    sourceType: requireOneOf(`${at}sourceType`, input.sourceType, CREATION_SOURCE_TYPES),
    sourceId: optionalText(`${at}sourceId`, input.sourceId),
    revision: optionalText(`${at}revision`, input.revision),
    timeoutSecs:
      input.timeoutSecs === undefined || input.timeoutSecs === null
        ? null
        : requireInt(`${at}timeoutSecs`, input.timeoutSecs, 1, 2 ** 31 - 1),
    idempotencyKey: checkKey(`${at}idempotencyKey`, input.idempotencyKey),
    idempotencyTtlSecs: requireInt(
      `${at}idempotencyTtlSecs`,
      input.idempotencyTtlSecs ?? IDEMPOTENCY_TTL.defaultSecs,
      1,
      IDEMPOTENCY_TTL.maxSecs,
    ),
  };
}

function checkKey(field: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || value.length === 0 || value.length > RECORD_LIMITS.maxKey) {
    throw new InvalidInputError(field, `must be a string of 1 to ${RECORD_LIMITS.maxKey} characters`);
  }
  return value;
}

export type { AuditOptions } from "./audit-repo.js";

/**
 * Creates a pending job without steps and returns its id (a new UUID), with
 * its `job.created` audit event in the same statement. Throws `InvalidInputError`.
 */
export async function create(db: Executor, input: NewJob, options: AuditOptions = {}): Promise<string> {
  const row = toJobRow(input);
  if (row.idempotencyKey !== null) {
    throw new InvalidInputError(
      "idempotencyKey",
      "is for createWithSteps and createMany (a job created with its steps)",
    );
  }
  const actor = checkActor("actor", options?.actor);
  await insertJobs(db, [{ ...row, stepsUnfinished: 0, live: true }], [], actor);
  return row.jobId;
}

type JobRow = ReturnType<typeof toJobRow> & {
  stepsUnfinished: number;
  /** Whether the job gets a job_live row (see createManyWithResults). */
  live: boolean;
  parent?: { jobId: string; stepName: string; depth: number } | undefined;
};

/**
 * The one insert of jobs (and their steps, and their `job.created` events):
 * `CREATE_JOBS`, or `CREATE_JOBS_KEYED` when a job has an idempotency key.
 * Returns, per job, the id it has: its own when created, else the id of the
 * job that holds its key (a key repeated within the call: the first job's).
 */
async function insertJobs(
  db: Executor,
  jobs: readonly JobRow[],
  steps: readonly Record<string, unknown>[],
  actor: { type: string; id: string | null },
): Promise<CreateResult[]> {
  // A key repeated within the call: its later jobs are the first's.
  const firstByKey = new Map<string, JobRow>();
  const unique: JobRow[] = [];
  for (const j of jobs) {
    if (j.idempotencyKey === null) {
      unique.push(j);
      continue;
    }
    const k = JSON.stringify([j.workspace, j.idempotencyKey]);
    if (!firstByKey.has(k)) {
      firstByKey.set(k, j);
      unique.push(j);
    }
  }
  const keyed = firstByKey.size > 0;
  const kept = new Set<string>(unique.map((j) => j.jobId));
  const jobJson = JSON.stringify(
    unique.map((j) => ({
      job_id: j.jobId,
      workspace: j.workspace,
      task_name: j.taskName,
      mode: j.mode,
      input: j.input,
      source_type: j.sourceType,
      source_id: j.sourceId,
      revision: j.revision,
      timeout_secs: j.timeoutSecs,
      steps_unfinished: j.stepsUnfinished,
      keyed: j.idempotencyKey !== null,
      live: j.live,
      parent_job_id: j.parent?.jobId ?? null,
      parent_step_name: j.parent?.stepName ?? null,
      depth: j.parent === undefined ? 0 : j.parent.depth + 1,
    })),
  );
  const values = {
    jobs: jobJson,
    steps: JSON.stringify(keyed ? steps.filter((s) => kept.has(s.job_id as string)) : steps),
    actorType: actor.type,
    actorId: actor.id,
  };
  if (!keyed) {
    await translateErrors(
      db,
      () => runStatement(db, CREATE_JOBS, values),
      (e) => stepConstraintError(e, undefined),
    );
    return jobs.map((j) => ({ jobId: j.jobId, created: true }));
  }
  const keys = [...firstByKey.values()].map((j) => ({
    workspace: j.workspace,
    key: j.idempotencyKey,
    job_id: j.jobId,
    ttl_secs: j.idempotencyTtlSecs,
  }));
  const rows = await translateErrors(
    db,
    () =>
      runStatement<{ created: string[] }, typeof values & { keys: string }>(db, CREATE_JOBS_KEYED, {
        ...values,
        keys: JSON.stringify(keys),
      }),
    (e) => stepConstraintError(e, undefined),
  );
  const created = new Set(rows[0]?.created ?? []);
  // Keys another job holds: read after the create, which waited for that job's commit.
  const taken = keys.filter((k) => !created.has(k.job_id));
  const holders = new Map<string, string>();
  if (taken.length > 0) {
    const found = await translateErrors(db, () =>
      runStatement<{ workspace: string; key: string; job_id: string }, { keys: string }>(db, JOBS_BY_KEYS, {
        keys: JSON.stringify(taken.map((k) => ({ workspace: k.workspace, key: k.key }))),
      }),
    );
    for (const f of found) holders.set(JSON.stringify([f.workspace, f.key]), f.job_id);
  }
  return jobs.map((j) => {
    if (j.idempotencyKey === null) return { jobId: j.jobId, created: true };
    const k = JSON.stringify([j.workspace, j.idempotencyKey]);
    const first = firstByKey.get(k) as JobRow;
    if (created.has(first.jobId)) return { jobId: first.jobId, created: first === j };
    return { jobId: holders.get(k) ?? first.jobId, created: false };
  });
}

/** What `createManyWithResults` did for one job: its id, and whether this call created it. */
export interface CreateResult {
  jobId: string;
  /** False when its idempotency key was live: `jobId` is the job that holds it, and nothing was written for it. */
  created: boolean;
}

/** One job of `createMany`: the job and the steps of its flow. */
export interface NewJobWithSteps {
  job: NewJob;
  steps: readonly NewFlowStep[];
}

/** Most jobs one `createMany` call takes. */
export const MAX_CREATE_BATCH = 10_000;

/**
 * Creates many jobs with their steps in one statement (all or nothing) and
 * returns their ids in order. Every flow is validated first
 * (`FlowValidationError` lists every problem of the first bad one;
 * `InvalidInputError` names the bad field, e.g. `items[3].steps[1].actionType`)
 * and nothing is written if any is invalid. Steps without dependencies start
 * `ready`, the others `pending`; each row stores its dependencies and the
 * graph's counts, so reports advance the job in O(dependants). Records one
 * `job.created` audit event per job (by `options.actor`, default the
 * system) in the same statement. Wakes `listenForReady` listeners on
 * commit. Up to 10,000 jobs a call.
 */
export async function createMany(
  db: Executor,
  items: readonly NewJobWithSteps[],
  options: AuditOptions = {},
): Promise<string[]> {
  return (await createManyWithResults(db, items, options)).map((r) => r.jobId);
}

/**
 * `createMany`, answering per job whether this call created it: a job whose
 * `idempotencyKey` another job holds (live, in its workspace) is answered
 * with that job's id and `created: false`, and nothing is written for it
 * (no job, steps, event or wake-up), also when two calls race with one key
 * (the second waits for the first's commit) and when a key repeats within
 * the call (its later jobs are the first's). An expired key is taken over.
 */
export async function createManyWithResults(
  db: Executor,
  items: readonly NewJobWithSteps[],
  options: AuditOptions = {},
  /**
   * A child task's parent step and its job's depth (`JobStepRepo.startChild`,
   * which has locked it); not part of the public options.
   */
  parent?: { jobId: string; stepName: string; depth: number },
): Promise<CreateResult[]> {
  if (!Array.isArray(items)) throw new InvalidInputError("items", "must be an array");
  const actor = checkActor("actor", options?.actor);
  if (items.length > MAX_CREATE_BATCH) {
    throw new InvalidInputError("items", `must hold at most ${MAX_CREATE_BATCH} jobs, got ${items.length}`);
  }
  if (items.length === 0) return [];
  const jobs: JobRow[] = [];
  const steps: Array<Record<string, unknown>> = [];
  for (const [i, item] of items.entries()) {
    const at = items.length === 1 ? "" : `items[${i}].`;
    if (typeof item !== "object" || item === null) throw new InvalidInputError(`items[${i}]`, "must be an object");
    const row = toJobRow(item.job, at);
    if (!Array.isArray(item.steps)) throw new InvalidInputError(`${at}steps`, "must be an array");
    const checked = (item.steps as readonly NewFlowStep[]).map((s, j) => checkFlowStep(s, `${at}steps[${j}]`));
    const flow = toFlow(checked);
    validateFlow(flow);
    const dependants = new Map<string, string[]>(checked.map((s) => [s.stepName, []]));
    for (const s of checked) for (const d of s.dependsOn) dependants.get(d)?.push(s.stepName);
    // A job of one step keeps its state on its step's live row, unless it is a
    // child or has a task or loop step (a parent: a cancel holds its
    // job_live row while it walks down to the children; a loop gains steps).
    const live =
      checked.length !== 1 ||
      parent !== undefined ||
      checked.some((s) => s.actionType === "task" || s.forEach !== null);
    jobs.push({ ...row, stepsUnfinished: checked.length, live, parent });
    for (const s of checked) {
      steps.push({
        job_id: row.jobId,
        step_name: s.stepName,
        action_name: s.actionName,
        action_type: s.actionType,
        required_ability: s.requiredAbility,
        required_tags: s.requiredTags,
        action_image: s.actionImage,
        action_spec: s.actionSpec,
        input: s.input,
        status: s.dependsOn.length === 0 ? "ready" : "pending",
        depends_on: s.dependsOn,
        continue_on_failure: s.continueOnFailure,
        dependants: (dependants.get(s.stepName) ?? []).sort(),
        deps_unfinished: s.dependsOn.length,
        max_retries: s.maxRetries,
        retry_backoff_secs: s.retryBackoffSecs,
        retry_strategy: s.retryStrategy,
        retry_jitter: s.retryJitter,
        timeout_secs: s.timeoutSecs,
        when_condition: s.when,
        for_each: s.forEach,
      });
    }
  }
  return insertJobs(db, jobs, steps, actor);
}

/**
 * Creates a job and all its steps (one statement, all or nothing) and returns
 * the job id: `createMany` with one item (its errors name fields without the
 * `items[0].` prefix), its `job.created` audit event included.
 */
export async function createWithSteps(
  db: Executor,
  input: NewJob,
  steps: readonly NewFlowStep[],
  options: AuditOptions = {},
): Promise<string> {
  const [jobId] = await createMany(db, [{ job: input, steps }], options);
  return jobId as string;
}

/** The job, or `undefined`. */
export async function get(db: Executor, jobId: string): Promise<Job | undefined> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () => db.select().from(jobState).where(eq(jobState.jobId, jobId)));
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
  /** Only these (workspace, task) pairs, as `search`'s `scope`; an empty scope sees nothing. */
  scope?: JobScope;
}

/**
 * A page of jobs, newest first (ties by job id, so pages never overlap),
 * filtered by the given fields. Scoped, each allowed pair's newest
 * `offset + limit` rows come from its own index range (`search`'s plan).
 */
export async function list(db: Executor, query: ListJobs): Promise<Job[]> {
  const limit = requireInt("limit", query.limit, 1, MAX_PAGE);
  const offset = requireInt("offset", query.offset, 0, Number.MAX_SAFE_INTEGER);
  const filters: SQL[] = [];
  if (query.workspace !== undefined) filters.push(eq(jobState.workspace, requireText("workspace", query.workspace)));
  if (query.status !== undefined) filters.push(eq(jobState.status, requireOneOf("status", query.status, JOB_STATUSES)));
  if (query.taskName !== undefined) filters.push(eq(jobState.taskName, requireText("taskName", query.taskName)));
  const scope = checkScope(query.scope, query.workspace);
  if (scope !== undefined) {
    if (scope.length === 0) return [];
    const rows = await translateErrors(db, () =>
      db.execute<Record<string, unknown>>(
        searchStatement({
          ...(query.status === undefined ? {} : { statuses: [query.status] }),
          ...(query.taskName === undefined ? {} : { taskNames: [query.taskName] }),
          scope,
          limit: offset + limit,
        }),
      ),
    );
    return rows.rows.slice(offset).map((r) => mapRow(jobState, r));
  }
  return translateErrors(db, () =>
    db
      .select()
      .from(jobState)
      .where(and(...filters))
      .orderBy(desc(jobState.createdAt), desc(jobState.jobId))
      .limit(limit)
      .offset(offset),
  );
}

/**
 * Jobs per status, every status present; with `scope`, only the allowed
 * (workspace, task) pairs' jobs (an empty scope counts nothing), each pair
 * counted over its own index range.
 */
export async function countByStatus(
  db: Executor,
  options: { scope?: JobScope } = {},
): Promise<Record<JobStatus, number>> {
  const scope = checkScope(options?.scope);
  const rows =
    scope === undefined
      ? await translateErrors(db, () =>
          db.select({ status: jobState.status, n: count() }).from(jobState).groupBy(jobState.status),
        )
      : scope.length === 0
        ? []
        : (
            await translateErrors(db, () =>
              db.execute<{ status: JobStatus; n: number }>(sql`
                select j.status, count(*)::int as n
                from jsonb_to_recordset(${JSON.stringify(scope)}::jsonb) as p(workspace text, "taskName" text)
                cross join lateral (
                  select j.status from job_state j
                  where j.workspace = p.workspace and p."taskName" is not null and j.task_name = p."taskName"
                  union all
                  select j.status from job_state j where j.workspace = p.workspace and p."taskName" is null
                ) j
                group by j.status`),
            )
          ).rows;
  const out = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;
  for (const r of rows) out[r.status] = r.n;
  return out;
}

/**
 * pending -> running, recording the worker and `started_at` (local mode: one
 * worker runs the whole job). Throws `InvalidTransitionError`,
 * `JobNotFoundError`, `WorkerNotFoundError`.
 */
export async function markRunning(db: Executor, jobId: string, workerId: string): Promise<void> {
  requireUuid("workerId", workerId);
  requireUuid("jobId", jobId);
  await transitionJob(db, jobId, ["pending"], "running", { workerId, startedAt: sql`now()` }, (e) =>
    e.constraint === CONSTRAINTS.jobWorkerFk ? new WorkerNotFoundError(workerId, { cause: e }) : undefined,
  );
}

/** What ending a job by hand (`markCompleted`, `markFailed`) did to its open steps. */
export interface FinishJobResult {
  /** Its steps that were pending or ready, now `cancelled` (never claimed). */
  cancelled: string[];
  /** Its running steps, which keep running with `cancelRequestedAt` set (their workers learn it from `heartbeat`). */
  cancelRequested: string[];
  /** Its child jobs (and theirs) that were unfinished, now cancelled, deepest first. */
  children: string[];
}

async function finishJob(
  db: Executor,
  jobId: string,
  status: "completed" | "failed",
  output: unknown,
): Promise<FinishJobResult> {
  const rows = await translateErrors(db, () =>
    runStatement<FinishJobRow, { jobId: string; status: "completed" | "failed"; output: string | null }>(
      db,
      FINISH_JOB,
      { jobId, status, output: output === null ? null : JSON.stringify(output) },
    ),
  );
  const row = rows[0] as FinishJobRow;
  if (row.result === "not_found") throw new JobNotFoundError(jobId);
  if (row.result === "invalid_transition") {
    throw new InvalidTransitionError("job", jobId, undefined, row.job_status ?? "?", status);
  }
  return { cancelled: row.cancelled ?? [], cancelRequested: row.cancel_requested ?? [], children: row.children ?? [] };
}

/**
 * The design note's hand mark: `pending | running -> completed` with the
 * output and `completed_at`, in one statement that locks the job row, then
 * ends its open steps as `cancel` does (pending and ready ones `cancelled`,
 * never claimed; running ones asked to stop through `WorkerRepo.heartbeat`,
 * their late reports recorded and moving nothing), so no worker runs a step
 * of a finished job. Jobs with steps normally finish by themselves when
 * their last step reports; this is for the server deciding a job's outcome.
 * Throws, having written nothing: `InvalidInputError`, `JobNotFoundError`,
 * `InvalidTransitionError` (the job is already completed, failed or cancelled).
 */
export async function markCompleted(db: Executor, jobId: string, output?: unknown): Promise<FinishJobResult> {
  const value = optionalJson("output", output);
  requireUuid("jobId", jobId);
  return finishJob(db, jobId, "completed", value);
}

/** `pending | running -> failed` with `completed_at`, its open steps ended with it; otherwise as `markCompleted`. */
export async function markFailed(db: Executor, jobId: string): Promise<FinishJobResult> {
  requireUuid("jobId", jobId);
  return finishJob(db, jobId, "failed", null);
}

/** Sets where the job's log is kept, in any status. Throws `JobNotFoundError`. */
export async function setLogPath(db: Executor, jobId: string, logPath: string): Promise<void> {
  requireUuid("jobId", jobId);
  const path = requireText("logPath", logPath);
  const rows = await translateErrors(db, () =>
    db.update(job).set({ logPath: path }).where(eq(job.jobId, jobId)).returning({ id: job.jobId }),
  );
  if (rows.length === 0) throw new JobNotFoundError(jobId);
}

/** What `cancel` did. */
export interface CancelResult {
  /** The job was cancelled already: nothing was written. */
  alreadyCancelled: boolean;
  /** Its steps that were pending or ready, now `cancelled`. */
  cancelled: string[];
  /** Its running steps, which keep running with `cancelRequestedAt` set (their workers learn it from `heartbeat`). */
  cancelRequested: string[];
  /** Its child jobs (and theirs) that were unfinished, now cancelled, deepest first. */
  children: string[];
}

/**
 * Cancels a job, in one statement: locks the job row, then its steps;
 * `pending | running -> cancelled` with `completed_at` and the `reason`;
 * its pending and ready steps become `cancelled` (never claimed), its
 * running steps keep running with `cancel_requested_at` (`WorkerRepo.heartbeat`
 * tells their workers; their late reports are recorded and promote nothing;
 * a rescue cancels them instead of requeuing). Cancelling a cancelled job is
 * a no-op (`alreadyCancelled`, no audit event). A cancel that happens
 * records a `job.cancelled` audit event (by `options.actor`, default the
 * system; details: reason, the steps cancelled and asked to stop) in the
 * same statement. Throws, having written nothing: `InvalidInputError`,
 * `JobNotFoundError`, `InvalidTransitionError` (the job completed or failed).
 */
export async function cancel(
  db: Executor,
  jobId: string,
  options: { reason?: string } & AuditOptions = {},
): Promise<CancelResult> {
  requireUuid("jobId", jobId);
  const reason = optionalText("reason", options?.reason);
  const actor = checkActor("actor", options?.actor);
  const rows = await translateErrors(db, () =>
    runStatement<CancelJobRow, { jobId: string; reason: string | null; actorType: string; actorId: string | null }>(
      db,
      CANCEL_JOB,
      { jobId, reason, actorType: actor.type, actorId: actor.id },
    ),
  );
  const row = rows[0] as CancelJobRow;
  if (row.result === "not_found") throw new JobNotFoundError(jobId);
  if (row.result === "invalid_transition") {
    throw new InvalidTransitionError("job", jobId, undefined, row.job_status ?? "?", "cancelled");
  }
  return {
    alreadyCancelled: row.result === "already",
    cancelled: row.cancelled ?? [],
    cancelRequested: row.cancel_requested ?? [],
    children: row.children ?? [],
  };
}

/**
 * The child jobs started for the steps of `jobId` (`JobStepRepo.startChild`),
 * oldest first (the `idx_job_parent` index). An unknown job has none.
 */
export async function children(db: Executor, jobId: string): Promise<Job[]> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () =>
    db.select().from(jobState).where(eq(jobState.parentJobId, jobId)).orderBy(jobState.createdAt, jobState.jobId),
  );
  return rows;
}

export { attempts, madeFrom, type RerunOptions, rerun, restart, retry } from "./lineage.js";
export {
  decodeCursor,
  type JobScope,
  type JobSearch,
  type JobSearchPage,
  MAX_SCOPE_PAIRS,
  MAX_SEARCH_PAGE,
  MAX_SEARCH_TEXT,
  MAX_SEARCH_VALUES,
  search,
} from "./search.js";
export {
  type DurationQuery,
  type DurationSummary,
  durations,
  type JobStats,
  type JobStatsQuery,
  MAX_RECENT,
  MAX_STATS_BUCKETS,
  MAX_STATS_DAYS,
  type Percentiles,
  parseBucket,
  stats,
  type TaskDurations,
  type TaskStats,
  type ThroughputBucket,
} from "./stats.js";
export { advanceJob as advance };
