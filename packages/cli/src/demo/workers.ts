import { randomUUID } from "node:crypto";
import { type AdvanceResult, createPool, type Database, JobRepo, JobStepRepo, WorkerRepo } from "@stroem/repos";
import type { JobStep } from "@stroem/schema";
import { bar } from "../format.js";
import { capabilitiesOf, PIPELINE, stepOutcome } from "./pipeline.js";

export interface WorkerStats {
  executed: number;
  completed: number;
  failed: number;
  skipped: number;
  running: number;
}

export interface WorkersOptions {
  url: string;
  workers: number;
  seed: number;
  failRate: number;
  maxStepMs: number;
  /** The demo's jobs, in creation order (a job's index seeds its steps' outcomes). */
  jobIds: readonly string[];
  out: NodeJS.WritableStream & { isTTY?: boolean };
  /** Aborting it stops the workers after their current step. */
  signal?: AbortSignal;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Records a claimed step's outcome and advances its job, in one transaction.
 * Guarded: only this worker, in this claim (`attempt`), may report the step.
 * The one place the worker's "finish a step" recipe lives, so it can become
 * a single repo call.
 */
async function finishStep(
  db: Database,
  step: Pick<JobStep, "jobId" | "stepName" | "attempts">,
  workerId: string,
  outcome: { fail: boolean; error: string; output: Record<string, unknown> },
): Promise<AdvanceResult> {
  return db.transaction(async (tx) => {
    const guard = { workerId, attempt: step.attempts };
    if (outcome.fail) await JobStepRepo.markFailed(tx, step.jobId, step.stepName, outcome.error, guard);
    else await JobStepRepo.markCompleted(tx, step.jobId, step.stepName, outcome.output, guard);
    return JobRepo.advance(tx, step.jobId);
  });
}

/**
 * Runs `workers` concurrent workers, each on its own pool, until every job is
 * terminal or `signal` aborts, with live progress on `out` (a redrawn line on
 * a terminal, a line a second otherwise). Throws the first worker's error, or
 * a stuck-run error when no step finishes for 30 s; returns the counts.
 */
export async function runWorkers(o: WorkersOptions): Promise<{ stats: WorkerStats; wallMs: number }> {
  const say = (line = "") => o.out.write(`${line}\n`);
  const jobIndex = new Map(o.jobIds.map((id, i) => [id, i]));
  const jobs = o.jobIds.length;
  const stats: WorkerStats = { executed: 0, completed: 0, failed: 0, skipped: 0, running: 0 };
  const finished = new Set<string>();
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  if (o.signal?.aborted) stop.abort();
  o.signal?.addEventListener("abort", onAbort);
  const started = Date.now();
  let lastProgress = Date.now();
  let workerError: unknown;

  const worker = async (i: number) => {
    const caps = capabilitiesOf(i);
    const wdb = createPool(o.url, { max: 2, applicationName: `stroem-demo-worker-${i}` });
    const workerId = randomUUID();
    let beat: NodeJS.Timeout | undefined;
    try {
      await WorkerRepo.register(wdb, { workerId, name: `demo-worker-${i} (${caps.join("+")})`, capabilities: caps });
      beat = setInterval(() => void WorkerRepo.heartbeat(wdb, workerId).catch(() => undefined), 500);
      // Idle workers back off (5 ms doubling to 80 ms) so polling does not
      // crowd out the workers that have steps to run.
      let idleMs = 5;
      while (!stop.signal.aborted && finished.size < jobs) {
        const step = await JobStepRepo.claimReadyStep(wdb, caps, workerId);
        if (!step) {
          await sleep(idleMs);
          idleMs = Math.min(idleMs * 2, 80);
          continue;
        }
        idleMs = 5;
        stats.running++;
        const { fail, ms } = stepOutcome(
          o.seed,
          jobIndex.get(step.jobId) ?? -1,
          step.stepName,
          o.failRate,
          o.maxStepMs,
        );
        await sleep(ms);
        const result = await finishStep(wdb, step, workerId, {
          fail,
          error: `simulated failure (seed ${o.seed})`,
          output: { durationMs: ms, worker: i },
        });
        stats.running--;
        stats.executed++;
        stats[fail ? "failed" : "completed"]++;
        stats.skipped += result.skipped.length;
        if (result.jobStatus === "completed" || result.jobStatus === "failed") finished.add(step.jobId);
        lastProgress = Date.now();
      }
      await WorkerRepo.deactivate(wdb, workerId);
    } catch (error) {
      if (!stop.signal.aborted) {
        workerError ??= error;
        stop.abort();
      }
    } finally {
      clearInterval(beat);
      await wdb.$client.end();
    }
  };

  const total = jobs * PIPELINE.length;
  const progress = () => {
    const elapsed = (Date.now() - started) / 1000;
    const done = stats.completed + stats.failed + stats.skipped;
    return `jobs ${String(finished.size).padStart(String(jobs).length)}/${jobs} ${bar(finished.size / Math.max(1, jobs))} steps: ✔ ${stats.completed} ✘ ${stats.failed} ⊘ ${stats.skipped} ▶ ${stats.running} of ${total}  ${(stats.executed / Math.max(elapsed, 0.001)).toFixed(0)} steps/s  (${Math.round((100 * done) / Math.max(1, total))}%)`;
  };
  const tty = o.out.isTTY === true;
  const ticker = setInterval(
    () => {
      if (tty) o.out.write(`\r\x1b[2K${progress()}`);
      else say(progress());
      if (Date.now() - lastProgress > 30_000 && !stop.signal.aborted) {
        workerError ??= new Error("no step finished for 30 s: the run is stuck");
        stop.abort();
      }
    },
    tty ? 100 : 1000,
  );
  try {
    await Promise.all(Array.from({ length: o.workers }, (_, i) => worker(i)));
  } finally {
    clearInterval(ticker);
    o.signal?.removeEventListener("abort", onAbort);
  }
  if (tty) o.out.write(`\r\x1b[2K`);
  o.signal?.throwIfAborted();
  say(progress());
  if (workerError) throw workerError;
  return { stats, wallMs: Date.now() - started };
}
