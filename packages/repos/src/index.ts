export { type AdvanceResult, storedFlow } from "./advance.js";
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
} from "./db.js";
export * from "./errors.js";
export type { ListJobs, NewFlowStep, NewJob } from "./job-repo.js";
export * as JobRepo from "./job-repo.js";
export type { NewJobStep, ReadyBacklog, RescueOptions, StepAudit, StepGuard, StepRef } from "./job-step-repo.js";
export * as JobStepRepo from "./job-step-repo.js";
export type { RegisterWorker } from "./worker-repo.js";
export * as WorkerRepo from "./worker-repo.js";
