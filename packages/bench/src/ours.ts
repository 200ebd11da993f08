/**
 * "Ours": the worker-facing operations of `@stroem/repos` the bench measures,
 * one function per operation, so the scenarios read the same for both systems.
 */
import {
  type Database,
  JobRepo,
  JobStepRepo,
  listenForReady as listen,
  type NewJobWithSteps,
  type ReadyListener,
  type ReportAndClaimResult,
  type ReportOutcome,
  type ReportResult,
  type StepRef,
  type StepReport,
  WorkerRepo,
} from "@stroem/repos";
import type { JobStep } from "@stroem/schema";

export type { NewJobWithSteps, ReadyListener, ReportOutcome, StepRef, StepReport };

/** How ours is measured, for the output header. */
export const API_PATHS = {
  report: "JobStepRepo.complete (one statement)",
  batchReport: "JobStepRepo.reportMany (one statement a batch)",
  chainReport: "JobStepRepo.reportAndClaim (one statement: the report and the next claim)",
  enqueue: "JobRepo.createMany (one statement a call)",
  wakeUp: "listenForReady (LISTEN/NOTIFY)",
  expandLoop: "JobStepRepo.expandLoop (one statement)",
} as const;

export async function registerWorker(db: Database, workerId: string, capabilities: readonly string[]): Promise<void> {
  await WorkerRepo.register(db, { workerId, name: `bench-${workerId.slice(0, 8)}`, capabilities });
}

/** Claims one ready step (or none). */
export function claimOne(
  db: Database,
  capabilities: readonly string[],
  workerId: string,
): Promise<JobStep | undefined> {
  return JobStepRepo.claimReadyStep(db, capabilities, workerId);
}

/** Claims up to `limit` ready steps in one statement. */
export function claimMany(
  db: Database,
  capabilities: readonly string[],
  workerId: string,
  limit: number,
): Promise<JobStep[]> {
  return JobStepRepo.claimReadySteps(db, capabilities, workerId, limit);
}

/** Records a claimed step's success and moves its job on (promotes dependants, settles the job). */
export function complete(db: Database, ref: StepRef, output?: unknown): Promise<ReportResult> {
  return JobStepRepo.complete(db, ref, output);
}

/** Records a claimed step's failure and moves its job on. */
export function fail(db: Database, ref: StepRef, error: string): Promise<ReportResult> {
  return JobStepRepo.fail(db, ref, error);
}

/** Reports one step and claims the worker's next ready one, in one statement. */
export function reportAndClaim(
  db: Database,
  report: StepReport,
  capabilities: readonly string[],
): Promise<ReportAndClaimResult> {
  return JobStepRepo.reportAndClaim(db, report, capabilities);
}

/** Reports several steps; one result per report, in order (a refused report does not stop the others). */
export function reportMany(db: Database, reports: readonly StepReport[]): Promise<ReportOutcome[]> {
  return JobStepRepo.reportMany(db, reports);
}

/** Creates jobs with their steps; ids in order. */
export function createMany(db: Database, items: readonly NewJobWithSteps[]): Promise<string[]> {
  return JobRepo.createMany(db, items);
}

/** The server's expansion of a ready `forEach` step into one instance per item (one statement). */
export function expandLoop(
  db: Database,
  ref: { jobId: string; stepName: string },
  items: readonly unknown[],
): Promise<JobStepRepo.ExpandedLoop> {
  return JobStepRepo.expandLoop(db, ref, items);
}

/** Tells an idle worker when to claim again (LISTEN/NOTIFY). */
export function listenForReady(url: string, capabilities: readonly string[]): Promise<ReadyListener> {
  return listen(url, { capabilities });
}
