import { randomUUID } from "node:crypto";
import { createPool, type Database, JobStepRepo, listenForReady, type ReportResult, WorkerRepo } from "@stroem/repos";
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
 * Reports a claimed step's outcome, which also advances its job, in one call.
 * Guarded: only this worker, in this claim (`attempt`), may report the step.
 */
async function finishStep(
  db: Database,
  step: Pick<JobStep, "jobId" | "stepName" | "attempts">,
  workerId: string,
  outcome: { fail: boolean; error: string; output: Record<string, unknown> },
): Promise<ReportResult> {
  const ref = { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts };
  return outcome.fail ? JobStepRepo.fail(db, ref, outcome.error) : JobStepRepo.complete(db, ref, outcome.output);
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
    let wake: Awaited<ReturnType<typeof listenForReady>> | undefined;
    try {
      await WorkerRepo.register(wdb, { workerId, name: `demo-worker-${i} (${caps.join("+")})`, capabilities: caps });
      beat = setInterval(() => void WorkerRepo.heartbeat(wdb, workerId).catch(() => undefined), 500);
      // Idle workers sleep until a step of their kind becomes ready (LISTEN),
      // checking at least every 200 ms (the last jobs finish on other workers).
      wake = await listenForReady(o.url, { capabilities: caps });
      while (!stop.signal.aborted && finished.size < jobs) {
        const step = await JobStepRepo.claimReadyStep(wdb, caps, workerId);
        if (!step) {
          await wake.wait({ timeoutMs: 200, signal: stop.signal });
          continue;
        }
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
      await wake?.close();
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
