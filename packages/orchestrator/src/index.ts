export { type DependencyCounts, decideStep, jobStatusFromCounts, type StepDecision } from "./counts.js";
export { FlowValidationError } from "./errors.js";
export { toFlow } from "./flow.js";
export { initialStatus, initialSteps, isTerminal, planAdvance } from "./plan.js";
export type {
  AdvancedJobStatus,
  AdvancePlan,
  Flow,
  FlowProblem,
  FlowStep,
  NamedFlowStep,
  StepStatus,
  StepStatusView,
} from "./types.js";
export { validateFlow } from "./validate.js";
