import { randomUUID } from "node:crypto";
import {
  type CancelResult,
  createPool,
  type Database,
  InvalidTransitionError,
  JobRepo,
  JobStepRepo,
  listenForReady,
  type ReportResult,
  WorkerRepo,
} from "@stroem/repos";
import { isServerActionType, type JobStep } from "@stroem/schema";
import { bar } from "../format.js";
import { capabilitiesOf, PIPELINE, REGIONS, SMOKE_TEST, stepOutcome } from "./pipeline.js";

export interface WorkerStats {
  /** Runs (attempts) executed: each ends in a report or a `markCancelled`. */
  executed: number;
  completed: number;
  /** Final failures (a failure that was retried counts in `retried`). */
  failed: number;
  retried: number;
  skipped: number;
  /** Steps cancelled: by the job's cancel, or stopped by their worker. */
  cancelled: number;
  running: number;
  /** The server's decisions: gates approved, loops expanded (and their instances), child jobs started. */
  approved: number;
  loops: number;
  instances: number;
  children: number;
}

/** One run of a step as its worker saw it: the attempt it claimed and how it ended. */
export interface Run {
  jobId: string;
  stepName: string;
  attempt: number;
  workerId: string;
  outcome: "completed" | "failed" | "retried" | "cancelled";
}

/** What became of the job the demo cancels. */
export interface CancelReport {
  jobId: string;
  reason: string;
  /** `JobRepo.cancel`'s answer: steps cancelled at once, running steps asked to stop. */
  result: CancelResult;
  /** Running steps whose worker learnt of the cancel from its heartbeat and reported `markCancelled`. */
  stopped: string[];
  /** Running steps whose outcome came in after the cancel (recorded, moving nothing). */
  late: Array<{ stepName: string; outcome: Run["outcome"]; promoted: number }>;
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
  /**
   * A job to cancel (through `db`, as a user would) when its first step
   * starts: it is then running, so its cancel is requested from a worker
   * while the rest of the job is cancelled at once, and it cannot have
   * finished yet.
   */
  cancel?: { jobId: string; reason: string; db: Database };
}

/** Sleeps `ms`; true when `signal` aborted first. */
function sleepOrStop(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

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
 * a stuck-run error when no step finishes for 30 s; returns the counts, every
 * run, and what became of the cancelled job.
 *
 * Each worker heartbeats every 500 ms with the step it runs; a step whose
 * cancel the heartbeat returns is stopped and reported `markCancelled`.
 */
export async function runWorkers(
  o: WorkersOptions,
): Promise<{ stats: WorkerStats; runs: Run[]; cancel?: CancelReport; wallMs: number }> {
  const say = (line = "") => o.out.write(`${line}\n`);
  // A child job's steps draw their outcomes with its parent's index (their names differ from the parent's).
  const jobIndex = new Map(o.jobIds.map((id, i) => [id, i]));
  const demoJobs = new Set(o.jobIds);
  const jobs = o.jobIds.length;
  const stats: WorkerStats = {
    executed: 0,
    completed: 0,
    failed: 0,
    retried: 0,
    skipped: 0,
    cancelled: 0,
    running: 0,
    approved: 0,
    loops: 0,
    instances: 0,
    children: 0,
  };
  const runs: Run[] = [];
  let cancel: CancelReport | undefined;
  let cancelling: Promise<void> | undefined;
  /** Cancels `o.cancel`'s job once, when its first step is claimed; every claimer of its steps waits for it. */
  const cancelJob = (c: NonNullable<WorkersOptions["cancel"]>) => {
    cancelling ??= JobRepo.cancel(c.db, c.jobId, { reason: c.reason }).then((result) => {
      cancel = { jobId: c.jobId, reason: c.reason, result, stopped: [], late: [] };
      stats.cancelled += result.cancelled.length;
      finished.add(c.jobId);
    });
    return cancelling;
  };
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
    /** The step this worker runs, and the controller that stops it. */
    let current: { step: JobStep; stop: AbortController } | undefined;
    const heartbeat = async () => {
      const held = current;
      const running = held
        ? [{ jobId: held.step.jobId, stepName: held.step.stepName, attempt: held.step.attempts }]
        : [];
      for (const req of await WorkerRepo.heartbeat(wdb, workerId, { running })) {
        const c = current;
        if (c && c.step.jobId === req.jobId && c.step.stepName === req.stepName && c.step.attempts === req.attempt) {
          c.stop.abort();
        }
      }
    };
    try {
      await WorkerRepo.register(wdb, { workerId, name: `demo-worker-${i} (${caps.join("+")})`, capabilities: caps });
      beat = setInterval(() => void heartbeat().catch(() => undefined), 500);
      // Idle workers sleep until a step of their kind becomes ready (LISTEN),
      // checking at least every 200 ms (the last jobs finish on other workers,
      // and a retry may be due without a wake-up).
      wake = await listenForReady(o.url, { capabilities: caps });
      while (!stop.signal.aborted && finished.size < jobs) {
        const step = await JobStepRepo.claimReadyStep(wdb, caps, workerId);
        if (!step) {
          await wake.wait({ timeoutMs: 200, signal: stop.signal });
          continue;
        }
        stats.running++;
        if (o.cancel?.jobId === step.jobId) await cancelJob(o.cancel);
        const { fail, ms } = stepOutcome(
          o.seed,
          jobIndex.get(step.jobId) ?? -1,
          step.stepName,
          o.failRate,
          o.maxStepMs,
          step.attempts,
        );
        const held = { step, stop: new AbortController() };
        current = held;
        const stopped = await sleepOrStop(ms, held.stop.signal);
        current = undefined;
        const run = { jobId: step.jobId, stepName: step.stepName, attempt: step.attempts, workerId };
        if (stopped) {
          // Its job was cancelled: the heartbeat said so; the step stops here.
          await JobStepRepo.markCancelled(wdb, run);
          runs.push({ ...run, outcome: "cancelled" });
          stats.running--;
          stats.executed++;
          stats.cancelled++;
          cancel?.stopped.push(step.stepName);
          lastProgress = Date.now();
          continue;
        }
        const result = await finishStep(wdb, step, workerId, {
          fail,
          error: `simulated failure (seed ${o.seed}, attempt ${step.attempts})`,
          output: { durationMs: ms, worker: i, attempt: step.attempts },
        });
        const outcome = result.retried ? "retried" : fail ? "failed" : "completed";
        runs.push({ ...run, outcome });
        stats.running--;
        stats.executed++;
        stats[outcome]++;
        stats.skipped += result.skipped.length;
        if (result.jobStatus === "cancelled") {
          cancel?.late.push({ stepName: step.stepName, outcome, promoted: result.promoted.length });
        }
        if ((result.jobStatus === "completed" || result.jobStatus === "failed") && demoJobs.has(step.jobId)) {
          finished.add(step.jobId);
        }
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

  /**
   * Strøm's server, for the steps no worker claims: it finds them ready
   * (`readyServerSteps`, polled; a crashed server's next pass finds the same),
   * approves each gate as the release manager (`suspend`, then `approve`),
   * expands each deploy loop over the job's regions (`expandLoop`) and starts
   * each smoke test's child job (`startChild`). A decision that lost to the
   * cancel (the job's lock decides) is refused and skipped.
   */
  const server = async () => {
    const sdb = createPool(o.url, { max: 2, applicationName: "stroem-demo-server" });
    try {
      while (!stop.signal.aborted && finished.size < jobs) {
        const ready = await JobStepRepo.readyServerSteps(sdb, { limit: 100 });
        for (const step of ready) {
          const ref = { jobId: step.jobId, stepName: step.stepName };
          try {
            if (step.actionType === "approval") {
              await JobStepRepo.suspend(sdb, ref, { output: { message: "release to production?" } });
              await JobStepRepo.approve(sdb, ref, { by: "release-manager" });
              stats.approved++;
            } else if (step.forEach !== null) {
              const job = await JobRepo.get(sdb, step.jobId);
              const regions = (job?.input as { regions?: string[] } | null)?.regions ?? [...REGIONS];
              const expanded = await JobStepRepo.expandLoop(sdb, ref, regions);
              if (!expanded.repeated) {
                stats.loops++;
                stats.instances += expanded.instances;
              }
            } else if (step.actionType === "task") {
              const child = await JobStepRepo.startChild(sdb, ref, {
                job: { workspace: "demo", taskName: "smoke-test", sourceType: "api", input: { parent: step.jobId } },
                steps: SMOKE_TEST,
              });
              jobIndex.set(child.childJobId, jobIndex.get(step.jobId) ?? -1);
              if (!child.repeated) stats.children++;
            }
            lastProgress = Date.now();
          } catch (error) {
            if (!(error instanceof InvalidTransitionError)) throw error;
          }
        }
        if (ready.length === 0 && (await sleepOrStop(20, stop.signal))) break;
      }
    } catch (error) {
      if (!stop.signal.aborted) {
        workerError ??= error;
        stop.abort();
      }
    } finally {
      await sdb.$client.end();
    }
  };

  // Steps that end in a worker's run, a skip or a cancel: the pipeline's workers' steps (not its gate, loop or task
  // step), each region's deploy and the smoke test's child steps.
  const workerSteps = PIPELINE.filter((s) => !isServerActionType(s.actionType) && !s.forEach).length;
  const total = jobs * (workerSteps + REGIONS.length + SMOKE_TEST.length);
  const progress = () => {
    const elapsed = (Date.now() - started) / 1000;
    const done = stats.completed + stats.failed + stats.skipped + stats.cancelled;
    return `jobs ${String(finished.size).padStart(String(jobs).length)}/${jobs} ${bar(finished.size / Math.max(1, jobs))} steps: ✔ ${stats.completed} ✘ ${stats.failed} ↻ ${stats.retried} ⊘ ${stats.skipped} ⊗ ${stats.cancelled} ▶ ${stats.running} of ${total}  ${(stats.executed / Math.max(elapsed, 0.001)).toFixed(0)} runs/s  (${Math.round((100 * done) / Math.max(1, total))}%)`;
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
    await Promise.all([server(), ...Array.from({ length: o.workers }, (_, i) => worker(i))]);
  } finally {
    clearInterval(ticker);
    o.signal?.removeEventListener("abort", onAbort);
  }
  if (tty) o.out.write(`\r\x1b[2K`);
  o.signal?.throwIfAborted();
  say(progress());
  if (workerError) throw workerError;
  return { stats, runs, cancel, wallMs: Date.now() - started };
}
