/**
 * "Ours" measurements, each in the database at `url` (fresh, migrated), and
 * the exactly-once check that follows every run that finishes its jobs.
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database, JobRepo, JobStepRepo } from "@stroem/repos";
import { drive } from "./drive.js";
import { claimOne, complete, createMany, listenForReady, type NewJobWithSteps, registerWorker } from "./ours.js";
import { FLAT, type StepShape, seedJobs, UNTAKEABLE } from "./seed.js";
import { type Cost, startCost } from "./server.js";
import { median, quantile } from "./stats.js";

const CAPS = ["shell"] as const;

async function withPool<T>(url: string, fn: (db: Database) => Promise<T>): Promise<T> {
  const db = createPool(url, { max: 2, statementTimeoutMs: 0, applicationName: "stroem-bench" });
  try {
    return await fn(db);
  } finally {
    await db.$client.end();
  }
}

/**
 * Every job completed (unless `checkJobs` is false) and every step completed
 * after exactly one claim; returns what is wrong (empty when all is well).
 */
export async function checkAllDone(url: string, jobs: number, steps: number, checkJobs = true): Promise<string[]> {
  return withPool(url, async (db) => {
    const audit = await JobStepRepo.audit(db);
    const byJob = await JobRepo.countByStatus(db);
    const problems: string[] = [];
    const notDone = Object.entries(audit.byStatus).filter(([s, n]) => s !== "completed" && n > 0);
    if (audit.byStatus.completed !== steps) problems.push(`${audit.byStatus.completed}/${steps} steps completed`);
    if (notDone.length > 0) problems.push(`steps not completed: ${notDone.map(([s, n]) => `${n} ${s}`).join(", ")}`);
    if (audit.claimedMoreThanOnce > 0) problems.push(`${audit.claimedMoreThanOnce} steps with attempts > 1`);
    if (audit.finishedUnclaimed > 0) problems.push(`${audit.finishedUnclaimed} steps finished without a claim`);
    if (checkJobs && byJob.completed !== jobs) problems.push(`${byJob.completed}/${jobs} jobs completed`);
    return problems;
  });
}

export interface Throughput {
  /** Steps per second. */
  rate: number;
  problems: string[];
  /** Share of the workers' time spent reporting (the rest: claiming, idle waits), when measured. */
  reportShare?: number;
  /** What draining cost (seeding excluded), when measured. */
  cost?: Cost;
}

/** `jobs` jobs of `shape` drained by `workers` workers claiming `batch` at a time; steps/s. */
export async function oursDrain(
  url: string,
  jobs: number,
  shape: readonly StepShape[],
  workers: number,
  batch: number,
  claimNext = false,
): Promise<Throughput> {
  await withPool(url, (db) => seedJobs(db, jobs, shape));
  const steps = jobs * shape.length;
  const probe = await startCost(url);
  const run = await drive({ url, workers, batch, expected: steps, claimNext });
  const cost = await probe.stop();
  const problems = await checkAllDone(url, jobs, steps);
  if (run.duplicates > 0) problems.push(`${run.duplicates} steps handed out twice`);
  return {
    rate: run.reported / run.seconds,
    problems,
    reportShare: run.reportMs / (run.seconds * 1000 * workers),
    cost,
  };
}

/**
 * `oursDrain` of `jobs` one-step jobs with `untakeable` older ready steps
 * beside them that no worker may take (each requires a tag the workers lack:
 * another route of the claim index), seeded first so they are older. Checks
 * that every takeable step completed after one claim and that the others
 * are still ready, unclaimed.
 */
export async function oursDrainRouted(
  url: string,
  jobs: number,
  untakeable: number,
  workers: number,
  batch: number,
): Promise<Throughput> {
  await withPool(url, async (db) => {
    await seedJobs(db, untakeable, UNTAKEABLE);
    await seedJobs(db, jobs, FLAT);
  });
  const probe = await startCost(url);
  const run = await drive({ url, workers, batch, expected: jobs });
  const cost = await probe.stop();
  const problems = await withPool(url, async (db) => {
    const audit = await JobStepRepo.audit(db);
    const out: string[] = [];
    if (audit.byStatus.completed !== jobs) out.push(`${audit.byStatus.completed}/${jobs} takeable steps completed`);
    if (audit.byStatus.ready !== untakeable)
      out.push(`${audit.byStatus.ready}/${untakeable} untakeable steps still ready`);
    if (audit.claimedMoreThanOnce > 0) out.push(`${audit.claimedMoreThanOnce} steps with attempts > 1`);
    return out;
  });
  if (run.duplicates > 0) problems.push(`${run.duplicates} steps handed out twice`);
  return { rate: run.reported / run.seconds, problems, cost };
}

export interface FanOut {
  /** Child reports per second over the timed ones (reports of one job serialise on its row lock). */
  rate: number;
  /** Per-child report times, ms. */
  median: number;
  p25: number;
  p75: number;
  reported: number;
  problems: string[];
}

/**
 * One job, root -> `n` children -> join, worked by `workers` single-step
 * workers; the time of each child's report (mark + advance), every child;
 * the whole job is checked.
 */
export async function oursFanOut(url: string, shape: readonly StepShape[], workers: number): Promise<FanOut> {
  await withPool(url, (db) => seedJobs(db, 1, shape));
  const times: number[] = [];
  const run = await drive({
    url,
    workers,
    batch: 1,
    expected: shape.length,
    onReport: (step, ms) => {
      if (step.stepName.startsWith("child-")) times.push(ms);
    },
  });
  const problems = await checkAllDone(url, 1, shape.length);
  if (run.duplicates > 0) problems.push(`${run.duplicates} steps handed out twice`);
  return {
    rate: times.length / run.seconds,
    median: median(times),
    p25: quantile(times, 0.25),
    p75: quantile(times, 0.75),
    reported: times.length,
    problems,
  };
}

const flatJob = (i: number): NewJobWithSteps => ({
  job: { taskName: "bench", sourceType: "api", input: { i } },
  steps: [{ stepName: "run", actionName: "noop", actionType: "shell" }],
});

/** `createMany` of `perCall` single-step jobs a call until `n`, on one connection; jobs/s. */
export async function oursEnqueue(url: string, n: number, perCall: number): Promise<Throughput> {
  return withPool(url, async (db) => {
    await db.execute("select 1"); // connect before the clock starts
    const t0 = performance.now();
    for (let i = 0; i < n; i += perCall) {
      await createMany(
        db,
        Array.from({ length: Math.min(perCall, n - i) }, (_, k) => flatJob(i + k)),
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    const counts = await JobRepo.countByStatus(db);
    const problems = counts.pending === n ? [] : [`${counts.pending}/${n} jobs created`];
    return { rate: n / seconds, problems };
  });
}

/**
 * Pickup latency on an idle queue: one worker claims, and when nothing is
 * ready waits on `listenForReady` (a 100 ms poll until it is merged); the
 * driver creates one job at a time on its own connection. Milliseconds from
 * before the create to the claim's return, after `warmUp` discarded samples,
 * with a random 0 to 100 ms idle gap before each.
 */
export async function oursLatency(
  url: string,
  samples: number,
  warmUp: number,
): Promise<{ ms: number[]; problems: string[] }> {
  const workerDb = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-worker" });
  const listener = await listenForReady(url, CAPS);
  const stop = new AbortController();
  const workerId = randomUUID();
  let onClaim: ((at: number) => void) | undefined;
  let onError: ((error: unknown) => void) | undefined;
  const problems: string[] = [];
  try {
    await registerWorker(workerDb, workerId, CAPS);
    const worker = (async () => {
      while (!stop.signal.aborted) {
        const step = await claimOne(workerDb, CAPS, workerId);
        if (!step) {
          await listener.wait({ timeoutMs: 1000, signal: stop.signal });
          continue;
        }
        onClaim?.(performance.now());
        await complete(workerDb, { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts });
      }
    })().catch((error) => {
      onError?.(error); // the sample waiting for a claim fails instead of hanging
      throw error;
    });
    worker.catch(() => {}); // handled: awaited below
    const ms: number[] = [];
    await withPool(url, async (db) => {
      for (let i = 0; i < samples + warmUp; i++) {
        await new Promise((r) => setTimeout(r, Math.random() * 100));
        const claimed = new Promise<number>((resolve, reject) => {
          onClaim = resolve;
          onError = reject;
        });
        const t0 = performance.now();
        await createMany(db, [flatJob(i)]);
        const t1 = await claimed;
        if (i >= warmUp) ms.push(t1 - t0);
      }
    });
    stop.abort();
    await worker;
    problems.push(...(await checkAllDone(url, samples + warmUp, samples + warmUp)));
    return { ms, problems };
  } finally {
    stop.abort();
    await listener.close();
    await workerDb.$client.end();
  }
}
