import { sql } from "drizzle-orm";
import {
  type AnyPgColumn,
  bigint,
  boolean,
  check,
  doublePrecision,
  foreignKey,
  index,
  integer,
  jsonb,
  pgTable,
  pgView,
  primaryKey,
  text,
  timestamp,
  uuid,
} from "drizzle-orm/pg-core";
import {
  ACTION_TYPES,
  type ActionType,
  AUDIT_ACTOR_TYPES,
  type AuditActorType,
  JOB_MODES,
  JOB_STATUSES,
  JOB_TERMINAL_STATUSES,
  type JobMode,
  type JobStatus,
  RECORD_LIMITS,
  RETRY_LIMITS,
  RETRY_STRATEGIES,
  type RetryStrategy,
  SOURCE_TYPES,
  type SourceType,
  STEP_STATUSES,
  STEP_TERMINAL_STATUSES,
  type StepStatus,
  WORKER_STATUSES,
  type WorkerStatus,
} from "./constants.js";

export * from "./auth-tables.js";

import { AUTH_CONSTRAINTS } from "./auth-tables.js";

/**
 * Names of the constraints the repos translate into typed errors. The tables
 * below are built with these names, so a rename shows up as a migration
 * (and in the drift check), never as a silently broken error translation.
 */
export const CONSTRAINTS = {
  jobWorkerFk: "job_live_worker_id_fk",
  stepJobFk: "job_step_job_id_job_job_id_fk",
  stepWorkerFk: "step_live_worker_id_fk",
  stepPk: "job_step_job_id_step_name_pk",
  deadlineJobFk: "job_deadline_job_id_job_job_id_fk",
  jobSourceFk: "job_source_job_id_fk",
  jobRetryOfFk: "job_retry_of_job_id_fk",
  jobParentFk: "job_parent_job_id_fk",
  idempotencyKeyPk: "job_idempotency_key_pk",
  artifactPk: "job_artifact_pk",
  artifactJobFk: "job_artifact_job_id_job_job_id_fk",
  ...AUTH_CONSTRAINTS,
  /** Not a table constraint: the name the append-only trigger on `audit_event` raises with (SQLSTATE 23001). */
  auditAppendOnly: "audit_event_append_only",
} as const;

/**
 * The text-search document of a job: its task name and the string and number
 * values of its input, with the `simple` configuration (no stemming, no stop
 * words: task names, identifiers and error text in any language). The GIN
 * index `idx_job_search` is built on exactly this expression and
 * `JobRepo.search` repeats it, so the planner matches the two; changing it
 * means a migration that rebuilds the index. Columns are unqualified (`job`).
 */
export const JOB_SEARCH_DOCUMENT =
  "(to_tsvector('simple'::regconfig, task_name) || jsonb_to_tsvector('simple'::regconfig, coalesce(input, 'null'::jsonb), '[\"string\", \"numeric\"]'::jsonb))";

/** The text-search document of a step's error (`job_step.error_message`), indexed by `idx_job_step_error_search`. */
export const STEP_ERROR_DOCUMENT = "to_tsvector('simple'::regconfig, error_message)";

/** `status in (...)` over a constant list, for CHECK constraints and partial indexes. */
function oneOf(column: AnyPgColumn, values: readonly string[]) {
  return sql`${column} in (${sql.raw(values.map((v) => `'${v}'`).join(", "))})`;
}

const tz = { withTimezone: true, mode: "date" } as const;

export const worker = pgTable(
  "worker",
  {
    workerId: uuid("worker_id").primaryKey(),
    name: text("name").notNull(),
    capabilities: jsonb("capabilities").$type<string[]>().notNull().default(["shell"]),
    /**
     * Labels of the machine (`gpu`, `eu-west`): the worker takes a step only
     * when it has every tag the step requires (`job_step.required_tags`).
     */
    tags: text("tags").array().notNull().default(sql`'{}'::text[]`),
    /**
     * A reserved worker: it takes only steps that require every one of its
     * tags (Strøm's rule); with no tags, only untagged steps.
     */
    exclusive: boolean("exclusive").notNull().default(false),
    lastHeartbeat: timestamp("last_heartbeat", tz),
    registeredAt: timestamp("registered_at", tz).notNull().defaultNow(),
    status: text("status").$type<WorkerStatus>().notNull().default("active"),
  },
  (t) => [check("worker_status_check", oneOf(t.status, WORKER_STATUSES))],
);

/** The columns of `job` (also those of its read view, `job_state`). */
const jobColumns = () => ({
  jobId: uuid("job_id").primaryKey(),
  workspace: text("workspace").notNull().default("default"),
  taskName: text("task_name").notNull(),
  mode: text("mode").$type<JobMode>().notNull().default("distributed"),
  input: jsonb("input").$type<unknown>(),
  output: jsonb("output").$type<unknown>(),
  status: text("status").$type<JobStatus>().notNull().default("pending"),
  sourceType: text("source_type").$type<SourceType>().notNull(),
  sourceId: text("source_id"),
  workerId: uuid("worker_id"),
  revision: text("revision"),
  createdAt: timestamp("created_at", tz).notNull().defaultNow(),
  startedAt: timestamp("started_at", tz),
  completedAt: timestamp("completed_at", tz),
  logPath: text("log_path"),
  /** Why the job was cancelled (`JobRepo.cancel`'s `reason`). */
  cancelReason: text("cancel_reason"),
  /** The job fails once it is this many seconds old and not finished (`sweepTimeouts`). */
  timeoutSecs: integer("timeout_secs"),
  /** Why the job failed, when no step says it (a timeout). */
  errorMessage: text("error_message"),
  /**
   * Steps not yet terminal, as far as advancing has applied their outcomes
   * (see `job_step.propagated`): the job is finished when it reaches 0.
   */
  stepsUnfinished: integer("steps_unfinished").notNull().default(0),
  /** Failed steps without `continue_on_failure`: the finished job failed when above 0. */
  stepsFailed: integer("steps_failed").notNull().default(0),
  /**
   * The job this one was made from (`JobRepo.rerun`, `restart`, `retry`),
   * set at creation, never changed; null once that job is purged.
   */
  sourceJobId: uuid("source_job_id"),
  /** A restart's step: the steps upstream of it were copied completed from `source_job_id`. */
  restartFromStep: text("restart_from_step"),
  /**
   * A job-level retry's first attempt (the root of the chain: every retry of
   * a retry names the same job); null for a job that is not a retry.
   */
  retryOfJobId: uuid("retry_of_job_id"),
  /** 0 for a first attempt; n for the n-th retry of `retry_of_job_id`. */
  retryAttempt: integer("retry_attempt").notNull().default(0),
  /** The job that retried this one (`JobRepo.retry`), set once; a job is retried at most once. */
  retryJobId: uuid("retry_job_id"),
  /**
   * A child job's parent (`JobStepRepo.startChild`): the job and its `task`
   * step that ends when this job ends. Null for a job that is no child, and
   * the id once the parent is purged.
   */
  parentJobId: uuid("parent_job_id"),
  parentStepName: text("parent_step_name"),
});

/**
 * A job's definition: written once, at creation (an operator may move its
 * `created_at` / `timeout_secs`; `log_path` and `retry_job_id` are set once
 * later), never by the hot path. What changes lives in `job_live` while the
 * job is unfinished and in `job_result` once it is finished; `job_state`
 * (the view the repos read) overlays the three. A job of exactly one step
 * has no `job_live` row: its step's `step_live` row is its live state.
 */
export const job = pgTable(
  "job",
  {
    jobId: uuid("job_id").primaryKey(),
    workspace: text("workspace").notNull().default("default"),
    taskName: text("task_name").notNull(),
    mode: text("mode").$type<JobMode>().notNull().default("distributed"),
    input: jsonb("input").$type<unknown>(),
    sourceType: text("source_type").$type<SourceType>().notNull(),
    sourceId: text("source_id"),
    revision: text("revision"),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
    logPath: text("log_path"),
    timeoutSecs: integer("timeout_secs"),
    sourceJobId: uuid("source_job_id"),
    restartFromStep: text("restart_from_step"),
    retryOfJobId: uuid("retry_of_job_id"),
    retryAttempt: integer("retry_attempt").notNull().default(0),
    retryJobId: uuid("retry_job_id"),
    parentJobId: uuid("parent_job_id"),
    parentStepName: text("parent_step_name"),
  },
  (t) => [
    check("job_mode_check", oneOf(t.mode, JOB_MODES)),
    check("job_source_type_check", oneOf(t.sourceType, SOURCE_TYPES)),
    check("job_timeout_secs_check", sql`${t.timeoutSecs} > 0`),
    foreignKey({ name: CONSTRAINTS.jobSourceFk, columns: [t.sourceJobId], foreignColumns: [t.jobId] }).onDelete(
      "set null",
    ),
    foreignKey({ name: CONSTRAINTS.jobRetryOfFk, columns: [t.retryOfJobId], foreignColumns: [t.jobId] }).onDelete(
      "set null",
    ),
    // A retry names its chain's first job and counts from 1; a restart names its step.
    check(
      "job_lineage_check",
      sql`${t.retryAttempt} >= 0 and (${t.retryAttempt} = 0 or ${t.sourceType} = 'retry') and (${t.restartFromStep} is null or ${t.sourceType} = 'restart')`,
    ),
    // Lineage look-ups (what was made from this job, a retry chain).
    index("idx_job_source_job").on(t.sourceJobId).where(sql`${t.sourceJobId} is not null`),
    index("idx_job_retry_of").on(t.retryOfJobId, t.retryAttempt).where(sql`${t.retryOfJobId} is not null`),
    // The list and search indexes end in (created_at, job_id), the order of
    // `list` and of `search`'s keyset cursor. The row is never updated by the
    // hot path, so they cost an entry at creation and nothing after.
    index("idx_job_created_at").on(t.createdAt, t.jobId),
    index("idx_job_workspace_created").on(t.workspace, t.createdAt, t.jobId),
    index("idx_job_workspace_task").on(t.workspace, t.taskName, t.createdAt, t.jobId),
    // `search`'s text query over task name and input (GIN over the same
    // expression the query repeats, JOB_SEARCH_DOCUMENT).
    index("idx_job_search").using("gin", sql.raw(JOB_SEARCH_DOCUMENT)),
    // A child task's parent (JobStepRepo.startChild); the id is cleared when the parent is purged.
    foreignKey({ name: CONSTRAINTS.jobParentFk, columns: [t.parentJobId], foreignColumns: [t.jobId] }).onDelete(
      "set null",
    ),
    check("job_parent_check", sql`${t.parentJobId} is null or ${t.parentStepName} is not null`),
    // `JobRepo.children`, and a cancel's walk down to its job's children.
    index("idx_job_parent").on(t.parentJobId, t.createdAt).where(sql`${t.parentJobId} is not null`),
  ],
);

/**
 * The live state of an unfinished job of zero or several steps (a one-step
 * job has none: its step's live row is its state): its status (`pending` or
 * `running`), the local-mode worker, when it started, and the counts that
 * settle it. Every change of such a job's state locks this row first (the
 * lock order). Deleted when the job finishes (a trigger moves a row updated
 * to a terminal status into `job_result`), so the table is the size of the
 * backlog. No foreign key to `job` (a delete of jobs deletes it, by trigger):
 * the check would lock the job row.
 */
export const jobLive = pgTable(
  "job_live",
  {
    jobId: uuid("job_id").primaryKey(),
    status: text("status").$type<JobStatus>().notNull().default("pending"),
    workerId: uuid("worker_id"),
    startedAt: timestamp("started_at", tz),
    completedAt: timestamp("completed_at", tz),
    output: jsonb("output").$type<unknown>(),
    errorMessage: text("error_message"),
    cancelReason: text("cancel_reason"),
    /**
     * Steps not yet terminal, as far as advancing has applied their outcomes
     * (see `propagated`): the job is finished when it reaches 0.
     */
    stepsUnfinished: integer("steps_unfinished").notNull().default(0),
    /** Failed steps without `continue_on_failure`: the finished job failed when above 0. */
    stepsFailed: integer("steps_failed").notNull().default(0),
    /**
     * A child job's parent step (copies of `job`'s): when this row finishes,
     * the trigger that moves it to `job_result` ends that step with it.
     */
    parentJobId: uuid("parent_job_id"),
    parentStepName: text("parent_step_name"),
    /**
     * Parents above it (0: a job that is no child). The lock order between
     * jobs: a deeper job before a shallower one (a child's end locks the
     * child, then its parent), then by job id (`reportMany`, `createSteps`).
     */
    depth: integer("depth").notNull().default(0),
  },
  (t) => [
    foreignKey({ name: CONSTRAINTS.jobWorkerFk, columns: [t.workerId], foreignColumns: [worker.workerId] }),
    check("job_live_status_check", oneOf(t.status, JOB_STATUSES)),
    check("job_live_step_counts_check", sql`${t.stepsUnfinished} >= 0 and ${t.stepsFailed} >= 0 and ${t.depth} >= 0`),
    // sweepTimeouts' look for orphaned children (their parent step ended
    // without them): child rows only; the column never changes, so updates
    // of the row stay HOT.
    index("idx_job_live_parent").on(t.jobId).where(sql`${t.parentJobId} is not null`),
  ],
);

/**
 * A finished job's outcome, written once when it finishes (appended: never
 * updated), with the state it finished in. No foreign key to `job` (the
 * check would lock the job row on every job's last report); a delete of jobs
 * deletes their results (trigger `job_deleted`).
 */
export const jobResult = pgTable(
  "job_result",
  {
    jobId: uuid("job_id").primaryKey(),
    status: text("status").$type<JobStatus>().notNull(),
    workerId: uuid("worker_id"),
    startedAt: timestamp("started_at", tz),
    completedAt: timestamp("completed_at", tz).notNull().defaultNow(),
    output: jsonb("output").$type<unknown>(),
    errorMessage: text("error_message"),
    cancelReason: text("cancel_reason"),
    stepsUnfinished: integer("steps_unfinished").notNull().default(0),
    stepsFailed: integer("steps_failed").notNull().default(0),
  },
  (t) => [
    check("job_result_status_check", oneOf(t.status, JOB_TERMINAL_STATUSES)),
    // The retention purge's walk over finished jobs, oldest first.
    index("idx_job_result_completed").on(t.completedAt),
  ],
);

/**
 * The deadline of each job created with `timeout_secs` (created_at +
 * timeout_secs), written by a trigger on `job` insert. `sweepTimeouts` walks
 * it by deadline, fails the jobs still unfinished and deletes the rows it
 * visited, so it holds only deadlines not yet swept. A separate table, not a
 * partial index on `job` such as `WHERE completed_at IS NULL`: that predicate
 * made the UPDATE that finishes every job non-HOT (three index inserts and
 * 0.26 KB more WAL per one-step job: 1.92 against 1.66 KB, PostgreSQL 15,
 * fsync on, 4 workers), for the few jobs with a timeout.
 */
export const jobDeadline = pgTable(
  "job_deadline",
  {
    jobId: uuid("job_id").primaryKey(),
    deadline: timestamp("deadline", tz).notNull(),
  },
  (t) => [
    foreignKey({ name: CONSTRAINTS.deadlineJobFk, columns: [t.jobId], foreignColumns: [job.jobId] }).onDelete(
      "cascade",
    ),
    index("idx_job_deadline").on(t.deadline),
  ],
);

/** The columns of `job_step` (also those of its read view, `job_step_state`). */
const jobStepColumns = () => ({
  jobId: uuid("job_id").notNull(),
  stepName: text("step_name").notNull(),
  actionName: text("action_name").notNull(),
  actionType: text("action_type").$type<ActionType>().notNull().default("shell"),
  /** The worker capability the step needs; null: its action type. */
  requiredAbility: text("required_ability").$type<ActionType>(),
  /** Tags a worker must all have to take the step (`worker.tags`); sorted, distinct. */
  requiredTags: text("required_tags").array().notNull().default(sql`'{}'::text[]`),
  actionImage: text("action_image"),
  actionSpec: jsonb("action_spec").$type<unknown>(),
  input: jsonb("input").$type<unknown>(),
  output: jsonb("output").$type<unknown>(),
  status: text("status").$type<StepStatus>().notNull().default("pending"),
  workerId: uuid("worker_id"),
  startedAt: timestamp("started_at", tz),
  completedAt: timestamp("completed_at", tz),
  errorMessage: text("error_message"),
  /** The names of the steps this one waits for: the job keeps the graph it was created with. */
  dependsOn: text("depends_on").array().notNull().default(sql`'{}'::text[]`),
  /** Runs once its dependencies are terminal even if some failed; its own failure does not fail the job. */
  continueOnFailure: boolean("continue_on_failure").notNull().default(false),
  /**
   * How many times the step was claimed (moved to running): the attempt a
   * worker's report is guarded with. A step rescued from a dead worker and
   * claimed again shows 2.
   */
  attempts: integer("attempts").notNull().default(0),
  /**
   * Rescues that did not spend the step's retry budget (its worker died or
   * lost the claim: not the step's failure). Each such rescue also raised
   * `maxRetries` by one, so `maxRetries - rescues` is the policy the step
   * was created with. Bounded by the rescuer's `maxRescues` (default 3).
   */
  rescues: integer("rescues").notNull().default(0),
  /** When the step last became ready: the claim serves the oldest first. */
  readyAt: timestamp("ready_at", tz),
  /** The steps that list this one in `depends_on` (the graph's reverse edges), so advancing reads only them. */
  dependants: text("dependants").array().notNull().default(sql`'{}'::text[]`),
  /** Dependencies whose outcome has not reached this step yet. */
  depsUnfinished: integer("deps_unfinished").notNull().default(0),
  /** Dependencies that failed. */
  depsFailed: integer("deps_failed").notNull().default(0),
  /** Dependencies that completed. */
  depsCompleted: integer("deps_completed").notNull().default(0),
  /**
   * A terminal step's outcome has been applied to its dependants' counts and
   * to the job's (by the report that finished it, or by `advance`). False on
   * a step finished by a bare mark (`markCompleted` without `advance`).
   */
  propagated: boolean("propagated").notNull().default(false),
  /** Retry policy, given at creation: runs after the first (0: a failure is final). */
  maxRetries: integer("max_retries").notNull().default(0),
  /** Delay before the first retry, seconds. */
  retryBackoffSecs: integer("retry_backoff_secs").notNull().default(10),
  /** `fixed` or `exponential` (doubling per attempt, capped at one day). */
  retryStrategy: text("retry_strategy").$type<RetryStrategy>().notNull().default("exponential"),
  /** Fraction (0 to 1) of the delay that is random (only ever shortens it). */
  retryJitter: doublePrecision("retry_jitter").notNull().default(0),
  /**
   * One entry per failed attempt that was retried (a worker's `fail`, a
   * rescue): `{ attempt, workerId, error, startedAt, failedAt }`, oldest first.
   */
  /**
   * Set on a running step when its job is cancelled: the worker learns it
   * from its heartbeat and reports `markCancelled` (or its late outcome).
   */
  cancelRequestedAt: timestamp("cancel_requested_at", tz),
  /**
   * A run fails once it has been running this many seconds (`sweepTimeouts`;
   * the retry policy applies); a suspended gate fails once it has waited this long.
   */
  timeoutSecs: integer("timeout_secs"),
  /** When a server step (an approval gate) was suspended to wait for its decision. */
  suspendedAt: timestamp("suspended_at", tz),
  retryHistory: jsonb("retry_history").$type<RetryHistoryEntry[]>().notNull().default([]),
  ...loopColumns(),
});

/** A step's condition and loop fields (definition, `job_step`; also in `job_step_state`). */
const loopColumns = () => ({
  /** The server's condition (`NewFlowStep.when`): stored, never read by the database. */
  whenCondition: text("when_condition"),
  /** The expression of a loop step's items (`NewFlowStep.forEach`), for the server. */
  forEach: text("for_each"),
  /** An instance of a loop (`expandLoop`): the loop step it belongs to. */
  loopSource: text("loop_source"),
  /** An instance's position in its loop, from 0. */
  loopIndex: integer("loop_index"),
  /** Instances of the loop: on the loop step once expanded, and on each instance. */
  loopTotal: integer("loop_total"),
  /** An instance's item (`expandLoop`'s `items[loopIndex]`). */
  loopItem: jsonb("loop_item").$type<unknown>(),
});

/**
 * A step's definition: written once, at creation (a server may replace its
 * `input` before it runs: `updateInput`), never by the hot path. What
 * changes lives in `step_live` while the step is unfinished and in
 * `step_result` once it is finished; `job_step_state` (the view the repos
 * read) overlays the three.
 */
export const jobStep = pgTable(
  "job_step",
  {
    jobId: uuid("job_id").notNull(),
    stepName: text("step_name").notNull(),
    actionName: text("action_name").notNull(),
    actionType: text("action_type").$type<ActionType>().notNull().default("shell"),
    /** The worker capability the step needs; null: its action type. */
    requiredAbility: text("required_ability").$type<ActionType>(),
    /** Tags a worker must all have to take the step; sorted, distinct. */
    requiredTags: text("required_tags").array().notNull().default(sql`'{}'::text[]`),
    actionImage: text("action_image"),
    actionSpec: jsonb("action_spec").$type<unknown>(),
    input: jsonb("input").$type<unknown>(),
    dependsOn: text("depends_on").array().notNull().default(sql`'{}'::text[]`),
    continueOnFailure: boolean("continue_on_failure").notNull().default(false),
    dependants: text("dependants").array().notNull().default(sql`'{}'::text[]`),
    /** The retry policy the step was created with (`step_live.max_retries` is raised by free rescues). */
    maxRetries: integer("max_retries").notNull().default(0),
    retryBackoffSecs: integer("retry_backoff_secs").notNull().default(10),
    retryStrategy: text("retry_strategy").$type<RetryStrategy>().notNull().default("exponential"),
    retryJitter: doublePrecision("retry_jitter").notNull().default(0),
    timeoutSecs: integer("timeout_secs"),
    ...loopColumns(),
  },
  (t) => [
    primaryKey({ name: CONSTRAINTS.stepPk, columns: [t.jobId, t.stepName] }),
    foreignKey({ name: CONSTRAINTS.stepJobFk, columns: [t.jobId], foreignColumns: [job.jobId] }).onDelete("cascade"),
    check("job_step_action_type_check", oneOf(t.actionType, ACTION_TYPES)),
    check("job_step_retry_strategy_check", oneOf(t.retryStrategy, RETRY_STRATEGIES)),
    check("job_step_timeout_secs_check", sql`${t.timeoutSecs} > 0`),
    check(
      "job_step_retry_policy_check",
      sql`${t.maxRetries} between 0 and ${sql.raw(String(RETRY_LIMITS.maxRetries))} and ${t.retryBackoffSecs} between 0 and ${sql.raw(String(RETRY_LIMITS.maxBackoffSecs))} and ${t.retryJitter} between 0 and 1`,
    ),
    // An instance names its loop, its index and the loop's size; a loop step
    // is no instance (loops do not nest: an item list runs one level).
    check(
      "job_step_loop_check",
      sql`(${t.loopSource} is null) = (${t.loopIndex} is null) and (${t.loopSource} is null or (${t.loopIndex} >= 0 and ${t.loopIndex} < ${t.loopTotal} and ${t.forEach} is null)) and (${t.loopTotal} is null or ${t.loopTotal} >= 0)`,
    ),
  ],
);

/** The columns `step_live` and `step_result` share: a step's state, live or final. */
const stepStateColumns = () => ({
  jobId: uuid("job_id").notNull(),
  stepName: text("step_name").notNull(),
  /** A copy of the definition's, for the claim's index. */
  actionType: text("action_type").$type<ActionType>().notNull(),
  status: text("status").$type<StepStatus>().notNull().default("pending"),
  readyAt: timestamp("ready_at", tz),
  workerId: uuid("worker_id"),
  startedAt: timestamp("started_at", tz),
  completedAt: timestamp("completed_at", tz),
  output: jsonb("output").$type<unknown>(),
  errorMessage: text("error_message"),
  attempts: integer("attempts").notNull().default(0),
  rescues: integer("rescues").notNull().default(0),
  /** The definition's policy plus one per free rescue. */
  maxRetries: integer("max_retries").notNull().default(0),
  retryHistory: jsonb("retry_history").$type<RetryHistoryEntry[]>().notNull().default([]),
  /** Copies of the definition's, so advancing reads only live rows. */
  depsTotal: integer("deps_total").notNull().default(0),
  continueOnFailure: boolean("continue_on_failure").notNull().default(false),
  dependants: text("dependants").array().notNull().default(sql`'{}'::text[]`),
  timeoutSecs: integer("timeout_secs"),
  depsUnfinished: integer("deps_unfinished").notNull().default(0),
  depsFailed: integer("deps_failed").notNull().default(0),
  depsCompleted: integer("deps_completed").notNull().default(0),
  propagated: boolean("propagated").notNull().default(false),
  cancelRequestedAt: timestamp("cancel_requested_at", tz),
  suspendedAt: timestamp("suspended_at", tz),
  /** For a job of exactly one step: when the job started (its first claim or suspension); null until then. */
  jobStartedAt: timestamp("job_started_at", tz),
});

/**
 * One row per unfinished step (pending, ready, running, suspended) and per
 * finished step whose outcome waits to be applied (a bare mark before
 * `advance`): the size of the backlog. The claim walks its partial index;
 * the report deletes the row and appends the step's `step_result` (a trigger
 * moves a row updated to a finished, propagated status there). For a job of
 * exactly one step it is also the job's live state (`job_started_at`), and
 * every change of such a job locks this row first.
 */
export const stepLive = pgTable(
  "step_live",
  {
    ...stepStateColumns(),
    /**
     * Who may claim the step (`stroem_route(ability, tags)`): its required
     * ability alone for an untagged step (for a server step, its action
     * type), else the ability and its sorted tags joined by U+001F. Set at
     * creation, never updated. The claim walks `idx_step_live_claim` once
     * per route the worker may take, so ready steps of other routes cost it
     * nothing.
     */
    route: text("route").notNull(),
  },
  (t) => [
    primaryKey({ name: "step_live_pk", columns: [t.jobId, t.stepName] }),
    foreignKey({ name: CONSTRAINTS.stepWorkerFk, columns: [t.workerId], foreignColumns: [worker.workerId] }),
    check("step_live_status_check", oneOf(t.status, STEP_STATUSES)),
    check("step_live_ready_at_check", sql`${t.status} <> 'ready' or ${t.readyAt} is not null`),
    // A running step is held by a worker since a start time.
    check(
      "step_live_running_check",
      sql`${t.status} <> 'running' or (${t.workerId} is not null and ${t.startedAt} is not null)`,
    ),
    check(
      "step_live_completed_at_check",
      sql`(${oneOf(t.status, STEP_TERMINAL_STATUSES)}) = (${t.completedAt} is not null)`,
    ),
    check("step_live_suspended_check", sql`${t.status} <> 'suspended' or ${t.suspendedAt} is not null`),
    check(
      "step_live_counts_check",
      sql`${t.rescues} >= 0 and ${t.depsUnfinished} >= 0 and ${t.depsFailed} >= 0 and ${t.depsCompleted} >= 0`,
    ),
    // The claim's index: only claimable rows, per route, in the claim's
    // order; a claim for one route never walks past another's.
    index("idx_step_live_claim").on(t.route, t.readyAt, t.jobId, t.stepName).where(sql`${t.status} = 'ready'`),
    // Advance's look-up of a job's finished steps whose outcome has not been
    // applied yet; empty unless callers compose a bare mark with `advance`.
    index("idx_step_live_unpropagated")
      .on(t.jobId)
      .where(sql`${oneOf(t.status, STEP_TERMINAL_STATUSES)}`),
    // sweepTimeouts' candidates: running steps with a timeout.
    index("idx_step_live_timeout").on(t.startedAt).where(sql`${t.status} = 'running' and ${t.timeoutSecs} is not null`),
    // sweepTimeouts' suspended gates with a timeout.
    index("idx_step_live_suspended")
      .on(t.suspendedAt)
      .where(sql`${t.status} = 'suspended' and ${t.timeoutSecs} is not null`),
    // Workers' and recovery's look-up of what a worker holds.
    index("idx_step_live_running_worker").on(t.workerId).where(sql`${t.status} = 'running'`),
    // `search`'s text query over the errors of retried steps.
    index("idx_step_live_error_search")
      .using("gin", sql.raw(STEP_ERROR_DOCUMENT))
      .where(sql`${t.errorMessage} is not null`),
  ],
);

/**
 * The routes of tagged steps (an untagged step's route is its ability: no
 * row), one per distinct (ability, tags) ever created, inserted with the
 * steps (ON CONFLICT DO NOTHING: a probe, no write, once it exists). A
 * tagged worker's claim reads it to learn which routes it may take, so the
 * claim never enumerates the subsets of its tags. Never updated; rows are
 * not deleted (a route with no ready step costs a claim one index probe).
 */
export const stepRoute = pgTable("step_route", {
  route: text("route").primaryKey(),
  ability: text("ability").$type<ActionType>().notNull(),
  /** Sorted, distinct, at least one. */
  tags: text("tags").array().notNull(),
});

/**
 * A finished step's final state, written once (appended: never updated).
 * No foreign key to `job_step` or `worker` (the checks would lock those rows
 * on every report); a delete of jobs deletes their results (trigger `job_deleted`).
 */
export const stepResult = pgTable("step_result", stepStateColumns(), (t) => [
  primaryKey({ name: "step_result_pk", columns: [t.jobId, t.stepName] }),
  check("step_result_status_check", oneOf(t.status, STEP_TERMINAL_STATUSES)),
  // `search`'s text query over step errors: only rows with an error are in it.
  index("idx_step_result_error_search")
    .using("gin", sql.raw(STEP_ERROR_DOCUMENT))
    .where(sql`${t.errorMessage} is not null`),
]);

/**
 * The audit log: one row per change worth answering "who did this, when"
 * for, written in the same transaction as the change (see `AuditRepo` in
 * @stroem/repos). Append-only: a trigger (hand-written migration) refuses
 * UPDATE, DELETE and TRUNCATE except the retention purge's DELETE.
 */
export const auditEvent = pgTable(
  "audit_event",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    /** The writing transaction's time (`now()`), as for the rows it changed. */
    occurredAt: timestamp("occurred_at", tz).notNull().defaultNow(),
    actorType: text("actor_type").$type<AuditActorType>().notNull(),
    /** The user's or worker's id; null for the system (or an id naming the system process). */
    actorId: text("actor_id"),
    /** `entity.verb`, e.g. `job.created` (`AUDIT_ACTIONS`). */
    action: text("action").notNull(),
    /** What the event is about: `job` (step events are filed under their job), `user`, `api_key`, ... */
    entityType: text("entity_type").notNull(),
    entityId: text("entity_id").notNull(),
    details: jsonb("details").$type<Record<string, unknown>>().notNull().default({}),
  },
  (t) => [
    check("audit_event_actor_type_check", oneOf(t.actorType, AUDIT_ACTOR_TYPES)),
    // The list's keyset walk, newest first (a backward scan), and the purge's
    // oldest-first selection.
    index("idx_audit_event_time").on(t.occurredAt, t.id),
    // "What happened to this job / user / key", newest first.
    index("idx_audit_event_entity").on(t.entityType, t.entityId, t.occurredAt, t.id),
  ],
);

/**
 * Idempotent job creation: a key given to `JobRepo.createWithSteps` /
 * `createMany` maps to the job it created, per workspace, until
 * `expires_at`. A create with a live key returns that job and writes no
 * job; an expired key is taken over by the next create. Deleted with its
 * job (the retention purge), and expired rows by the purge too.
 */
export const jobIdempotencyKey = pgTable(
  "job_idempotency_key",
  {
    workspace: text("workspace").notNull(),
    key: text("key").notNull(),
    jobId: uuid("job_id").notNull(),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
    expiresAt: timestamp("expires_at", tz).notNull(),
  },
  (t) => [
    primaryKey({ name: CONSTRAINTS.idempotencyKeyPk, columns: [t.workspace, t.key] }),
    foreignKey({ columns: [t.jobId], foreignColumns: [job.jobId] }).onDelete("cascade"),
    check("job_idempotency_key_check", sql`length(${t.key}) between 1 and ${sql.raw(String(RECORD_LIMITS.maxKey))}`),
    // The purge's walk over expired keys.
    index("idx_job_idempotency_key_expires").on(t.expiresAt),
    index("idx_job_idempotency_key_job").on(t.jobId),
  ],
);

/**
 * A job's named outputs kept elsewhere (object storage): one row per job and
 * name (a second upload of the name replaces it), with the step that made
 * it, the content type, the size and the object's storage key. Deleted with
 * its job; the retention purge records the keys in `storage_deletion` first.
 */
export const jobArtifact = pgTable(
  "job_artifact",
  {
    jobId: uuid("job_id").notNull(),
    name: text("name").notNull(),
    stepName: text("step_name"),
    contentType: text("content_type").notNull().default("application/octet-stream"),
    sizeBytes: bigint("size_bytes", { mode: "number" }).notNull(),
    storageKey: text("storage_key").notNull(),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ name: CONSTRAINTS.artifactPk, columns: [t.jobId, t.name] }),
    foreignKey({ name: CONSTRAINTS.artifactJobFk, columns: [t.jobId], foreignColumns: [job.jobId] }).onDelete(
      "cascade",
    ),
    check(
      "job_artifact_check",
      sql`length(${t.name}) between 1 and ${sql.raw(String(RECORD_LIMITS.maxName))} and ${t.sizeBytes} >= 0 and length(${t.storageKey}) between 1 and ${sql.raw(String(RECORD_LIMITS.maxStorageKey))}`,
    ),
  ],
);

/**
 * State a task (or a workspace: `task_name = ''`) leaves for its next run: a
 * snapshot kept elsewhere (storage key, size, whether it holds JSON) and the
 * job that wrote it. Newest is highest `id`; `TaskStateRepo.insertAndPrune`
 * keeps the newest N per (workspace, task).
 */
export const taskState = pgTable(
  "task_state",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    workspace: text("workspace").notNull(),
    /** The task, or '' for the workspace's own state. */
    taskName: text("task_name").notNull().default(""),
    storageKey: text("storage_key").notNull(),
    sizeBytes: bigint("size_bytes", { mode: "number" }).notNull(),
    isJson: boolean("is_json").notNull().default(false),
    /** The job that wrote it (null once that job is purged). */
    jobId: uuid("job_id"),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
  },
  (t) => [
    foreignKey({ columns: [t.jobId], foreignColumns: [job.jobId] }).onDelete("set null"),
    check(
      "task_state_check",
      sql`${t.sizeBytes} >= 0 and length(${t.storageKey}) between 1 and ${sql.raw(String(RECORD_LIMITS.maxStorageKey))}`,
    ),
    // latest(): one probe, newest first; list() and the prune walk it too.
    index("idx_task_state_latest").on(t.workspace, t.taskName, t.id),
    index("idx_task_state_job").on(t.jobId),
  ],
);

/**
 * Objects whose rows are gone and that the server must delete from storage:
 * the retention purge records each artifact's key here in the statement that
 * deletes it (`StorageRepo.pendingDeletions`, `confirmDeleted`).
 */
export const storageDeletion = pgTable(
  "storage_deletion",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    storageKey: text("storage_key").notNull(),
    /** What the key belonged to: `artifact` (with its job id and name). */
    source: text("source").notNull(),
    jobId: uuid("job_id"),
    name: text("name"),
    recordedAt: timestamp("recorded_at", tz).notNull().defaultNow(),
  },
  (t) => [check("storage_deletion_source_check", sql`${t.source} in ('artifact')`)],
);

/** One failed attempt of a step that was retried (`job_step.retry_history`). Timestamps as ISO strings. */
export interface RetryHistoryEntry {
  attempt: number;
  /** The worker that ran it (null when no worker did). */
  workerId: string | null;
  error: string | null;
  startedAt: string | null;
  failedAt: string;
}

/**
 * The read views: every read of a job's or a step's state in the repos goes
 * through these, never through the tables (`sql/05_views.sql`). Today each is
 * a projection of its table; with the hot-path model of
 * `docs/data-model.md` ("lean") the tables hold only what is written once
 * and the views overlay what changes, so readers need not change. SQL
 * readers (dashboards, psql) should read these too.
 */
export const jobState = pgView("job_state", jobColumns()).existing();
export const jobStepState = pgView("job_step_state", jobStepColumns()).existing();

/** A worker row as read from the database. */
export type Worker = typeof worker.$inferSelect;
/** A job as the repos read it (`job_state`: its definition with its live or final state). */
export type Job = typeof jobState.$inferSelect;
/** A job step as the repos read it (`job_step_state`: its definition with its live or final state). */
export type JobStep = typeof jobStepState.$inferSelect;
/** An audit event as read from the database. */
export type AuditEvent = typeof auditEvent.$inferSelect;
/** An artifact row as read from the database. */
export type JobArtifact = typeof jobArtifact.$inferSelect;
/** A task or workspace state snapshot as read from the database. */
export type TaskState = typeof taskState.$inferSelect;
/** A storage object waiting to be deleted. */
export type StorageDeletion = typeof storageDeletion.$inferSelect;
