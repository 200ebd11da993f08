/**
 * `JobStepRepo`: everything about a job's steps, by concern.
 * - `steps/create.ts`: inserting steps into existing jobs;
 * - `steps/claim.ts`: the claim (and `markRunning`, a directed claim);
 * - `steps/report.ts`: reports (`complete`, `fail`, `reportMany`, `reportAndClaim`, bare marks);
 * - `steps/advance.ts`: the seed-facing advance calls that take a flow;
 * - `steps/gates.ts`, `steps/server.ts`: the server's steps (approval gates; conditions, child tasks, loops);
 * - `steps/recovery.ts`: rescuing the steps of workers that stopped heartbeating;
 * - `steps/stats.ts`: reads for dashboards and checks.
 * The hand-written statements they run live in `sql/`.
 */

export { promoteReadySteps, skipUnreachableSteps } from "./steps/advance.js";
export {
  type ClaimedStep,
  type ClaimRouting,
  claimReadyStep,
  claimReadySteps,
  MAX_CLAIM_BATCH,
  markRunning,
  updateInput,
} from "./steps/claim.js";
export { createSteps } from "./steps/create.js";
export {
  approve,
  type GateDecision,
  type GateRef,
  MAX_SERVER_STEPS,
  readyServerSteps,
  reject,
  suspend,
} from "./steps/gates.js";
export {
  DEFAULT_MAX_RESCUES,
  type RescuedStep,
  type RescueOptions,
  rescueStaleSteps,
  sweepTimeouts,
  type TimedOutStep,
} from "./steps/recovery.js";
export {
  complete,
  fail,
  MAX_REPORT_BATCH,
  markCancelled,
  markCompleted,
  markFailed,
  markSkipped,
  type ReportAndClaimResult,
  type ReportOutcome,
  type ReportResult,
  reportAndClaim,
  reportMany,
  type StepGuard,
  type StepRef,
  type StepReport,
} from "./steps/report.js";
export {
  decideCondition,
  type ExpandedLoop,
  expandLoop,
  type ServerDecision,
  type StartedChild,
  startChild,
} from "./steps/server.js";
export {
  allStepsTerminal,
  anyStepFailed,
  audit,
  getReadySteps,
  getStepsForJob,
  type ReadyBacklog,
  readyBacklog,
  type StepAudit,
} from "./steps/stats.js";
