import type { AdvancedJobStatus } from "./types.js";

/**
 * What a pending step knows of its dependencies, kept up to date as their
 * outcomes arrive (the `deps_*` columns of `job_step`), so deciding it never
 * needs the rest of the job.
 */
export interface DependencyCounts {
  /** How many dependencies the step has. */
  dependencies: number;
  /** Dependencies without an outcome yet (not terminal). */
  unfinished: number;
  failed: number;
  completed: number;
  continueOnFailure: boolean;
}

/** What becomes of a pending step: promoted, skipped, or left to wait. */
export type StepDecision = "ready" | "skipped" | "pending";

/**
 * The decision `planAdvance` makes for one pending step, from counts alone
 * (skipped dependencies are `dependencies - unfinished - failed - completed`):
 * - `continueOnFailure`: ready once no dependency is unfinished, whatever the outcomes;
 * - else skipped as soon as one dependency failed (without waiting for the others);
 * - else wait while one is unfinished;
 * - then ready if it has none or one completed, skipped if all were skipped.
 * The database applies the same rule (`stroem_decide` in `packages/schema/sql/10_advance.sql`); a
 * property test checks this against `planAdvance`, another the SQL.
 */
export function decideStep(c: DependencyCounts): StepDecision {
  if (c.continueOnFailure) return c.unfinished === 0 ? "ready" : "pending";
  if (c.failed > 0) return "skipped";
  if (c.unfinished > 0) return "pending";
  return c.dependencies === 0 || c.completed > 0 ? "ready" : "skipped";
}

/**
 * A job's status from its counts: `running` while a step is unfinished, then
 * `failed` if a step without `continueOnFailure` failed, else `completed`.
 */
export function jobStatusFromCounts(c: { unfinished: number; failed: number }): AdvancedJobStatus {
  if (c.unfinished > 0) return "running";
  return c.failed > 0 ? "failed" : "completed";
}
