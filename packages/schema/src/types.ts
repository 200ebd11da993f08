import type { ActionType, StepInitialStatus } from "./constants.js";

/**
 * A step of a flow, with how its action runs: what `JobRepo.createWithSteps`
 * and `JobRepo.createMany` take (the status comes from the graph). Optional
 * fields default to `null` (or `[]` / `false`). `dependsOn` is stored on the
 * row, so the job keeps the graph it was created with. It is also what
 * `@stroem/orchestrator`'s `toFlow` reads (`stepName`, `actionName`,
 * `dependsOn`, `continueOnFailure`).
 */
export interface NewFlowStep {
  stepName: string;
  actionName: string;
  actionType: ActionType;
  actionImage?: string | null;
  actionSpec?: unknown;
  input?: unknown;
  dependsOn?: readonly string[];
  /** Runs once its dependencies are terminal even if some failed; its own failure does not fail the job. */
  continueOnFailure?: boolean;
}

/** A step inserted into an existing job with `JobStepRepo.createSteps`, its status chosen by the caller. */
export interface NewJobStep extends NewFlowStep {
  jobId: string;
  status: StepInitialStatus;
}
