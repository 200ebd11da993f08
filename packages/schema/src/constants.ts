/**
 * Every value a status, mode, source or action column may hold. The database
 * enforces the same lists with CHECK constraints (see `tables.ts`); these
 * arrays are the single source both are built from.
 */
export const WORKER_STATUSES = ["active", "inactive"] as const;
export type WorkerStatus = (typeof WORKER_STATUSES)[number];

export const JOB_MODES = ["local", "distributed"] as const;
export type JobMode = (typeof JOB_MODES)[number];

export const JOB_STATUSES = ["pending", "running", "completed", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** Job statuses a job never leaves. */
export const JOB_TERMINAL_STATUSES = ["completed", "failed", "cancelled"] as const satisfies readonly JobStatus[];

/**
 * What created a job. `rerun`, `restart` and `retry` are the jobs made from
 * another one (`JobRepo.rerun`, `restart`, `retry`: `source_job_id` and
 * `source_id` name it); a job is created with one of the others
 * (`CREATION_SOURCE_TYPES`).
 */
export const SOURCE_TYPES = ["trigger", "user", "api", "webhook", "rerun", "restart", "retry"] as const;
export type SourceType = (typeof SOURCE_TYPES)[number];

/** The source types `JobRepo.create` / `createWithSteps` / `createMany` take. */
export const CREATION_SOURCE_TYPES = ["trigger", "user", "api", "webhook"] as const satisfies readonly SourceType[];

/**
 * A step's kind of action. Workers run `shell`, `docker` and `pod` steps
 * (`WORKER_ACTION_TYPES`: a worker's capabilities, what it claims); the
 * server runs the others (`SERVER_ACTION_TYPES`): an `approval` gate is
 * suspended until someone approves or rejects it; a `task` step starts a
 * child job and ends with it. Neither is ever claimed by a worker.
 */
export const ACTION_TYPES = ["shell", "docker", "pod", "approval", "task"] as const;
export type ActionType = (typeof ACTION_TYPES)[number];

/** The action types workers claim (a worker's capabilities are some of these). */
export const WORKER_ACTION_TYPES = ["shell", "docker", "pod"] as const satisfies readonly ActionType[];
export type WorkerActionType = (typeof WORKER_ACTION_TYPES)[number];

/** The action types the server handles itself (`JobStepRepo.readyServerSteps`, `suspend`, `approve`, `reject`, `startChild`). */
export const SERVER_ACTION_TYPES = ["approval", "task"] as const satisfies readonly ActionType[];

/**
 * The routes (`step_live.route`) of ready steps that wait for the server,
 * whatever their action type: a step with a `when` condition, once its
 * dependencies are done, waits for the server's decision (`decideCondition`:
 * run or skip); a `forEach` step waits for its items (`expandLoop`); an
 * expanded loop step waits for its instances (it finishes with the last).
 * No worker's capability can name them (they are not action types), so no
 * worker claims them; `readyServerSteps` walks the first two (and the server
 * action types) in the claim index.
 */
export const SERVER_ROUTES = { condition: "@when", loop: "@loop", instances: "@instances" } as const;

/** Most instances one `expandLoop` creates. */
export const MAX_LOOP_ITEMS = 10_000;

/**
 * A step's status. `suspended`: a server step (an approval gate) waiting for
 * a decision (`approve`, `reject`, its timeout, its job's cancel).
 */
export const STEP_STATUSES = [
  "pending",
  "ready",
  "running",
  "suspended",
  "completed",
  "failed",
  "skipped",
  "cancelled",
] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];

/** Step statuses a step never leaves. */
export const STEP_TERMINAL_STATUSES = [
  "completed",
  "failed",
  "skipped",
  "cancelled",
] as const satisfies readonly StepStatus[];

/** How a step's retry delay grows (`retryDelaySecs` in @stroem/orchestrator; a type test checks the lists agree). */
export const RETRY_STRATEGIES = ["fixed", "exponential"] as const;
export type RetryStrategy = (typeof RETRY_STRATEGIES)[number];

/** Bounds the database holds for the records kept beside jobs (idempotency keys, artifacts, state). */
export const RECORD_LIMITS = { maxKey: 512, maxName: 512, maxStorageKey: 1024 } as const;

/** Bounds the database holds for a step's retry policy (the orchestrator's `MAX_RETRIES`, `MAX_RETRY_DELAY_SECS`). */
export const RETRY_LIMITS = { maxRetries: 1000, maxBackoffSecs: 86_400 } as const;

/** Who did what an audit event records (`audit_event.actor_type`). */
export const AUDIT_ACTOR_TYPES = ["user", "worker", "system"] as const;
export type AuditActorType = (typeof AUDIT_ACTOR_TYPES)[number];

/**
 * The audit events this package writes (`audit_event.action`). Other code may
 * record actions of its own (`user.created`, `api_key.issued`, ...): the
 * column is free text, `entity.verb` by convention.
 */
export const AUDIT_ACTIONS = {
  jobCreated: "job.created",
  jobCancelled: "job.cancelled",
  jobTimedOut: "job.timed_out",
  stepRescued: "step.rescued",
  stepTimedOut: "step.timed_out",
  stepSuspended: "step.suspended",
  stepApproved: "step.approved",
  stepRejected: "step.rejected",
  stepConditionDecided: "step.condition_decided",
  stepExpanded: "step.expanded",
  childStarted: "job.child_started",
  userCreated: "user.created",
  userDeleted: "user.deleted",
  userAdminChanged: "user.admin_changed",
  userGroupsChanged: "user.groups_changed",
  apiKeyIssued: "api_key.issued",
  apiKeyRevoked: "api_key.revoked",
} as const;

/** Statuses a step may be created with. */
export const STEP_INITIAL_STATUSES = ["pending", "ready"] as const satisfies readonly StepStatus[];
export type StepInitialStatus = (typeof STEP_INITIAL_STATUSES)[number];

export function isJobTerminal(status: JobStatus): boolean {
  return (JOB_TERMINAL_STATUSES as readonly JobStatus[]).includes(status);
}

export function isStepTerminal(status: StepStatus): boolean {
  return (STEP_TERMINAL_STATUSES as readonly StepStatus[]).includes(status);
}

/** Whether steps of this action type are the server's (never claimed by a worker). */
export function isServerActionType(actionType: string): boolean {
  return (SERVER_ACTION_TYPES as readonly string[]).includes(actionType);
}
