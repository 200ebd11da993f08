import type { ActionType, RetryStrategy, StepInitialStatus } from "./constants.js";

/**
 * A step of a flow, with how its action runs: what `JobRepo.createWithSteps`
 * and `JobRepo.createMany` take (the status comes from the graph). Optional
 * fields default to `null` (or `[]` / `false`). `dependsOn` is stored on the
 * row, so the job keeps the graph it was created with. It is also what
 * `@stroem/orchestrator`'s `toFlow` reads (`stepName`, `actionName`,
 * `dependsOn`, `continueOnFailure`).
 */
export type NewFlowStep = NewFlowStepFields &
  // `action` is the design note's and Strøm's name for `actionName`: either is accepted (not two that differ).
  ({ actionName: string; action?: string } | { action: string; actionName?: string });

/** The fields of a `NewFlowStep` besides its action's name. */
export interface NewFlowStepFields {
  stepName: string;
  actionType: ActionType;
  /**
   * The worker capability the step needs (one of `WORKER_ACTION_TYPES`);
   * default its action type. A `shell` step run in a container needs `docker`.
   */
  requiredAbility?: ActionType | null;
  /**
   * Tags a worker must all have to take the step (`WorkerRepo.register`'s
   * `tags`); default none. At most 32, each 1 to 64 characters, no control characters.
   */
  requiredTags?: readonly string[];
  actionImage?: string | null;
  actionSpec?: unknown;
  input?: unknown;
  dependsOn?: readonly string[];
  /** Runs once its dependencies are terminal even if some failed; its own failure does not fail the job. */
  continueOnFailure?: boolean;
  /** Retries after a failed run (default 0: a failure is final); 0 to 1000. */
  maxRetries?: number;
  /** Seconds before the first retry (default 10); 0 to 86,400. */
  retryBackoffSecs?: number;
  /** `exponential` (default: the delay doubles each attempt, capped at one day) or `fixed`. */
  retryStrategy?: RetryStrategy;
  /** Fraction of the delay that is random, 0 (default) to 1. */
  retryJitter?: number;
  /** A run fails once it has been running this many seconds (`sweepTimeouts`); default none. */
  timeoutSecs?: number | null;
  /**
   * A condition the server evaluates (a template over upstream outputs; the
   * database stores it, never reads it): once the step's dependencies are
   * done it waits for `JobStepRepo.decideCondition` (run: released to
   * workers; or skipped). Up to 4,096 characters.
   */
  when?: string | null;
  /**
   * Makes the step a loop (the expression of its items, for the server):
   * once ready it waits for `JobStepRepo.expandLoop`, which creates one
   * instance per item (`step[0]`, `step[1]`, ...); it finishes with the last
   * of them. Up to 4,096 characters.
   */
  forEach?: string | null;
}

/** A step inserted into an existing job with `JobStepRepo.createSteps`, its status chosen by the caller. */
export type NewJobStep = NewFlowStep & {
  jobId: string;
  status: StepInitialStatus;
};
