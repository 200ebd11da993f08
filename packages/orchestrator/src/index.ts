export { type FlowEntry, flowFromEntries } from "./entries.js";
export { FlowValidationError } from "./errors.js";
export { initialStatus, initialSteps, isTerminal, planAdvance } from "./plan.js";
export type {
  AdvancePlan,
  Flow,
  FlowProblem,
  FlowStep,
  JobOutcome,
  StepState,
  StepStatusView,
} from "./types.js";
export { validateFlow } from "./validate.js";
