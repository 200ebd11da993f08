/**
 * One step of a flow: what runs (`actionName`; `action` is the design
 * note's and Strøm's name for it, accepted alike), and after what.
 */
export type FlowStep = FlowStepGraph &
  ({ actionName: string; action?: string } | { action: string; actionName?: string });

/** A flow step's graph: its dependencies and what it does after a failure. */
export interface FlowStepGraph {
  dependsOn?: readonly string[];
  /**
   * Runs once every dependency is terminal even if some failed or were
   * skipped (clean-up, notification); its own failure does not fail the job.
   */
  continueOnFailure?: boolean;
}

/** A workflow: step name to step. */
export type Flow = Record<string, FlowStep>;

/** A flow step with its name: how job creation and the stored graph list steps. */
export type NamedFlowStep = FlowStep & { stepName: string };

/**
 * A step's status (the values of the `job_step.status` column; a type test in
 * @stroem/schema checks the two lists agree).
 */
export type StepStatus =
  | "pending"
  | "ready"
  | "running"
  | "suspended"
  | "completed"
  | "failed"
  | "skipped"
  | "cancelled";

export interface StepStatusView {
  stepName: string;
  status: StepStatus;
}

/** The statuses advancing gives a job (the job row has `pending` and `cancelled` too). */
export type AdvancedJobStatus = "running" | "completed" | "failed";

export interface AdvancePlan {
  /** Pending steps that may run now, in topological order. */
  promote: string[];
  /** Pending steps that can never run, in topological order. */
  skip: string[];
  /** The job's status once the plan is applied. */
  jobStatus: AdvancedJobStatus;
}

export type FlowProblem =
  | { kind: "empty-flow"; message: string }
  | { kind: "empty-name"; message: string }
  | { kind: "duplicate-name"; step: string; message: string }
  | { kind: "missing-action"; step: string; message: string }
  | { kind: "conflicting-action"; step: string; message: string }
  | { kind: "graph-mismatch"; step: string; message: string }
  | { kind: "duplicate-dependency"; step: string; dependency: string; message: string }
  | { kind: "unknown-dependency"; step: string; dependency: string; message: string }
  | { kind: "self-dependency"; step: string; message: string }
  | { kind: "cycle"; path: string[]; message: string }
  | { kind: "unknown-step"; step: string; message: string }
  | { kind: "missing-step"; step: string; message: string };
