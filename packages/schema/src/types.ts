import type { ActionType, StepInitialStatus } from "./constants.js";

/**
 * One step to insert with `JobStepRepo.createSteps`. Optional fields default
 * to `null` (or `[]` / `false`). `dependsOn` is stored on the row so the job
 * keeps the graph it was created with.
 */
export interface NewJobStep {
  jobId: string;
  stepName: string;
  actionName: string;
  actionType: ActionType;
  actionImage?: string | null;
  actionSpec?: unknown;
  input?: unknown;
  status: StepInitialStatus;
  dependsOn?: readonly string[];
  continueOnFailure?: boolean;
}
