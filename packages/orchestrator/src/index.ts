export { type DependencyCounts, decideStep, jobStatusFromCounts, type StepDecision } from "./counts.js";
export { FlowValidationError } from "./errors.js";
export { toFlow } from "./flow.js";
export { initialStatus, initialSteps, isTerminal, planAdvance } from "./plan.js";
export {
  DEFAULT_RETRY_POLICY,
  decideRetry,
  MAX_RETRIES,
  MAX_RETRY_DELAY_SECS,
  RETRY_STRATEGIES,
  type RetryDecision,
  type RetryPolicy,
  type RetryStrategy,
  retryDelaySecs,
} from "./retry.js";
export type {
  AdvancedJobStatus,
  AdvancePlan,
  Flow,
  FlowProblem,
  FlowStep,
  FlowStepGraph,
  NamedFlowStep,
  StepStatus,
  StepStatusView,
} from "./types.js";
export { stepAction, validateFlow } from "./validate.js";
