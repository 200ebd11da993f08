import type { Flow } from "@stroem/orchestrator";
import { advanceWithFlow } from "../advance.js";
import type { Executor } from "../db.js";

/**
 * Seed-facing (the design note's API): promotes the job's pending steps that
 * may run now and returns their names. A thin wrapper over the stored-graph
 * advance (`JobRepo.advance`): `flow` must name the job's steps
 * (`FlowValidationError` otherwise), but the decision uses the graph stored
 * on the rows. Like `JobRepo.advance`, it also skips what can never run and
 * settles the job. Throws `JobNotFoundError`, `FlowValidationError`.
 */
export async function promoteReadySteps(db: Executor, jobId: string, flow: Flow): Promise<string[]> {
  return (await advanceWithFlow(db, jobId, flow)).promoted;
}

/**
 * Seed-facing: skips the job's pending steps that can never run (below a
 * failure without `continueOnFailure`, or below only skipped steps), the
 * whole cascade at once, and returns their names. A thin wrapper over the
 * stored-graph advance, like `promoteReadySteps` (so it also promotes what a
 * finished step unblocked).
 */
export async function skipUnreachableSteps(db: Executor, jobId: string, flow: Flow): Promise<string[]> {
  return (await advanceWithFlow(db, jobId, flow)).skipped;
}
