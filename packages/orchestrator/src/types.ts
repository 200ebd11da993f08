/** One step of a flow: what runs, and after what. */
export interface FlowStep {
  action: string;
  dependsOn?: readonly string[];
  input?: Record<string, unknown>;
  /**
   * Runs once every dependency is terminal even if some failed or were
   * skipped (clean-up, notification); its own failure does not fail the job.
   */
  continueOnFailure?: boolean;
}

/** A workflow: step name to step. */
export type Flow = Record<string, FlowStep>;

/** The step statuses the orchestrator reasons about (same values as the `job_step.status` column). */
export type StepState = "pending" | "ready" | "running" | "completed" | "failed" | "skipped";

export interface StepStatusView {
  stepName: string;
  status: StepState;
}

export type JobOutcome = "running" | "completed" | "failed";

export interface AdvancePlan {
  /** Pending steps that may run now, in topological order. */
  promote: string[];
  /** Pending steps that can never run, in topological order. */
  skip: string[];
  /** The job's state once the plan is applied. */
  jobOutcome: JobOutcome;
}

export type FlowProblem =
  | { kind: "empty-flow"; message: string }
  | { kind: "empty-name"; message: string }
  | { kind: "duplicate-name"; step: string; message: string }
  | { kind: "missing-action"; step: string; message: string }
  | { kind: "duplicate-dependency"; step: string; dependency: string; message: string }
  | { kind: "unknown-dependency"; step: string; dependency: string; message: string }
  | { kind: "self-dependency"; step: string; message: string }
  | { kind: "cycle"; path: string[]; message: string }
  | { kind: "unknown-step"; step: string; message: string }
  | { kind: "missing-step"; step: string; message: string };
