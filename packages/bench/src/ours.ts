/**
 * "Ours": the worker-facing operations of `@stroem/repos` the bench measures,
 * one function per operation. Each uses the one-call API when the installed
 * `@stroem/repos` has it (`JobStepRepo.complete`, `reportMany`,
 * `JobRepo.createMany`, `listenForReady`) and the composed path it replaces
 * otherwise, so the bench runs on either side of that change and the header
 * says which path was measured.
 */
import * as Repos from "@stroem/repos";
import {
  type AdvanceResult,
  type Database,
  JobRepo,
  JobStepRepo,
  type NewFlowStep,
  type NewJob,
  WorkerRepo,
} from "@stroem/repos";
import type { JobStep } from "@stroem/schema";

/** A report's target and guard: the worker that claimed the step and the claim's `attempts`. */
export interface StepReportRef {
  jobId: string;
  stepName: string;
  workerId?: string;
  attempt?: number;
}

export interface StepReport extends StepReportRef {
  outcome: "completed" | "failed";
  output?: unknown;
  error?: string;
}

export type ReportResult = ({ ok: true } & AdvanceResult) | { ok: false; error: unknown };

export interface NewJobWithSteps {
  job: NewJob;
  steps: NewFlowStep[];
}

export interface ReadyListener {
  /** Resolves true when work may be ready, false on timeout or abort. */
  wait(options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<boolean>;
  close(): Promise<void>;
}

/** The one-call API being added to `@stroem/repos`; absent members mean "not merged yet". */
interface NewStepApi {
  complete?(db: Database, ref: StepReportRef, output?: unknown): Promise<AdvanceResult>;
  fail?(db: Database, ref: StepReportRef, error: string): Promise<AdvanceResult>;
  reportMany?(db: Database, reports: readonly StepReport[]): Promise<ReportResult[]>;
}
interface NewJobApi {
  createMany?(db: Database, items: readonly NewJobWithSteps[]): Promise<string[]>;
}
interface NewRootApi {
  listenForReady?(url: string, options?: { capabilities?: readonly string[] }): Promise<ReadyListener> | ReadyListener;
}

const stepApi = JobStepRepo as unknown as NewStepApi;
const jobApi = JobRepo as unknown as NewJobApi;
const rootApi = Repos as unknown as NewRootApi;

/** Which path each operation takes with the installed `@stroem/repos`, for the output header. */
export function apiPaths(): Record<string, string> {
  return {
    report: typeof stepApi.complete === "function" ? "JobStepRepo.complete" : "markCompleted + JobRepo.advance (1 tx)",
    batchReport: typeof stepApi.reportMany === "function" ? "JobStepRepo.reportMany" : "loop of report",
    enqueue: typeof jobApi.createMany === "function" ? "JobRepo.createMany" : "loop of JobRepo.createWithSteps",
    wakeUp: typeof rootApi.listenForReady === "function" ? "listenForReady (LISTEN/NOTIFY)" : "polling every 100 ms",
  };
}

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
export function complete(db: Database, ref: StepReportRef, output?: unknown): Promise<AdvanceResult> {
  if (typeof stepApi.complete === "function") return stepApi.complete(db, ref, output);
  const guard = { workerId: ref.workerId, attempt: ref.attempt };
  return db.transaction(async (tx) => {
    await JobStepRepo.markCompleted(tx, ref.jobId, ref.stepName, output, guard);
    return JobRepo.advance(tx, ref.jobId);
  });
}

/** Records a claimed step's failure and moves its job on. */
export function fail(db: Database, ref: StepReportRef, error: string): Promise<AdvanceResult> {
  if (typeof stepApi.fail === "function") return stepApi.fail(db, ref, error);
  const guard = { workerId: ref.workerId, attempt: ref.attempt };
  return db.transaction(async (tx) => {
    await JobStepRepo.markFailed(tx, ref.jobId, ref.stepName, error, guard);
    return JobRepo.advance(tx, ref.jobId);
  });
}

/** Reports several steps; one result per report, in order (a refused report does not stop the others). */
export async function reportMany(db: Database, reports: readonly StepReport[]): Promise<ReportResult[]> {
  if (typeof stepApi.reportMany === "function") return stepApi.reportMany(db, reports);
  const results: ReportResult[] = [];
  for (const r of reports) {
    try {
      const advanced = r.outcome === "completed" ? await complete(db, r, r.output) : await fail(db, r, r.error ?? "");
      results.push({ ok: true, ...advanced });
    } catch (error) {
      results.push({ ok: false, error });
    }
  }
  return results;
}

/** Creates jobs with their steps; ids in order. */
export async function createMany(db: Database, items: readonly NewJobWithSteps[]): Promise<string[]> {
  if (typeof jobApi.createMany === "function") return jobApi.createMany(db, items);
  const ids: string[] = [];
  for (const item of items) ids.push(await JobRepo.createWithSteps(db, item.job, item.steps));
  return ids;
}

/** Tells an idle worker when to claim again: LISTEN/NOTIFY once merged, else a 100 ms poll. */
export async function listenForReady(url: string, capabilities: readonly string[]): Promise<ReadyListener> {
  if (typeof rootApi.listenForReady === "function") return rootApi.listenForReady(url, { capabilities });
  return {
    wait: ({ timeoutMs = 100, signal } = {}) =>
      new Promise<boolean>((resolve) => {
        if (signal?.aborted) return resolve(false);
        const onAbort = () => {
          clearTimeout(timer);
          resolve(false);
        };
        const timer = setTimeout(
          () => {
            signal?.removeEventListener("abort", onAbort);
            resolve(true);
          },
          Math.min(timeoutMs, 100),
        );
        signal?.addEventListener("abort", onAbort, { once: true });
      }),
    close: async () => {},
  };
}
