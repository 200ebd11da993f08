export type { NewJobStep } from "@stroem/schema";
export type { AdvanceResult } from "./advance.js";
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
export type { CancelResult, ListJobs, NewFlowStep, NewJob, NewJobWithSteps } from "./job-repo.js";
export * as JobRepo from "./job-repo.js";
export type {
  ReadyBacklog,
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
export { type ListenOptions, listenForReady, READY_CHANNEL, type ReadyListener, type WaitOptions } from "./listen.js";
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
export { isRolledBack, isTransient, REPORT_RETRY, type RetryPolicy, retryTransient } from "./transient.js";
export type { CancelRequest, HeartbeatOptions, HeldStep, RegisterWorker } from "./worker-repo.js";
export * as WorkerRepo from "./worker-repo.js";
