export type { NewJobStep } from "@stroem/schema";
export type { AdvanceResult } from "./advance.js";
export type { NewArtifact, PutArtifactResult } from "./artifact-repo.js";
export * as ArtifactRepo from "./artifact-repo.js";
export type { AuditActor, AuditEvent, AuditPage, ListAuditEvents, NewAuditEvent } from "./audit-repo.js";
export * as AuditRepo from "./audit-repo.js";
export { auditEventSql, record as recordAudit } from "./audit-repo.js";
export type { ApiKeyInfo, IssuedApiKey, NewApiKey, VerifiedApiKey } from "./auth/api-keys.js";
export * as ApiKeyRepo from "./auth/api-keys.js";
export * as GroupRepo from "./auth/groups.js";
export type { IssuedRefreshToken } from "./auth/refresh-tokens.js";
export * as RefreshTokenRepo from "./auth/refresh-tokens.js";
export type { ExternalIdentity, NewUser, UserInfo } from "./auth/users.js";
export * as UserRepo from "./auth/users.js";
export {
  createPool,
  type Database,
  type Executor,
  POOL_DEFAULTS,
  type PoolOptions,
  parseDatabaseUrl,
  ping,
  redactUrl,
  runMigrations,
  type Transaction,
  transaction,
} from "./db.js";
export * from "./errors.js";
export {
  MAX_INSPECT_ROWS,
  oldestRunning,
  type RunningStep,
  type StuckSteps,
  stuckSteps,
  type UnmatchedReady,
  type UnmatchedReadyStep,
  type UnmatchedReason,
  unmatchedReady,
  unmatchedReadySteps,
} from "./inspect.js";
export type {
  AuditOptions,
  CancelResult,
  CreateResult,
  DurationQuery,
  DurationSummary,
  JobScope,
  JobSearch,
  JobSearchPage,
  JobStats,
  JobStatsQuery,
  ListJobs,
  NewFlowStep,
  NewJob,
  NewJobWithSteps,
  Percentiles,
  TaskDurations,
  TaskStats,
  ThroughputBucket,
} from "./job-repo.js";
export * as JobRepo from "./job-repo.js";
export type {
  ReadyBacklog,
  ReportAndClaimResult,
  ReportOutcome,
  ReportResult,
  RescuedStep,
  RescueOptions,
  StepAudit,
  StepGuard,
  StepRef,
  StepReport,
  TimedOutStep,
} from "./job-step-repo.js";
export * as JobStepRepo from "./job-step-repo.js";
export { type ListenOptions, listenForReady, type ReadyListener, readyChannel, type WaitOptions } from "./listen.js";
export {
  builtInSweeps,
  MAINTENANCE_DEFAULTS,
  MAINTENANCE_LOCK_CLASS,
  type Maintenance,
  type MaintenanceOptions,
  type MaintenanceSweep,
  runSweep,
  type SweepEvent,
  startMaintenance,
} from "./maintenance.js";
export { MAX_PURGE_BATCH, type PurgeCounts, type PurgeOptions, purgeFinished } from "./retention.js";
export type { NewTaskState, StateScope } from "./task-state-repo.js";
export * as TaskStateRepo from "./task-state-repo.js";
export { isRolledBack, isTransient, REPORT_RETRY, type RetryPolicy, retryTransient } from "./transient.js";
export { type Target, translateError } from "./translate-error.js";
export { uuidv7, uuidv7Time } from "./uuid7.js";
export type { CancelRequest, HeartbeatOptions, HeldStep, RegisterWorker } from "./worker-repo.js";
export * as WorkerRepo from "./worker-repo.js";
