/**
 * "Ours" measurements, each in the database at `url` (fresh, migrated), and
 * the exactly-once check that follows every run that finishes its jobs.
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database, JobRepo, JobStepRepo } from "@stroem/repos";
import type { JobStep } from "@stroem/schema";
import { drive } from "./drive.js";
import {
  claimMany,
  claimOne,
  complete,
  createMany,
  expandLoop,
  listenForReady,
  type NewJobWithSteps,
  registerWorker,
  reportMany,
} from "./ours.js";
import { FLAT, LOOP_JOB, LOOP_STEP, type StepShape, seedJobs, UNTAKEABLE, wide } from "./seed.js";
import { type Cost, startCost } from "./server.js";
import { sql } from "./sql.js";
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

/** Steps a claim takes at most (`JobStepRepo.claimReadySteps`' limit). */
const CLAIM_LIMIT = JobStepRepo.MAX_CLAIM_BATCH;
/** Reports per `reportMany` call when reporting untimed work. */
const REPORT_CHUNK = 500;

/**
 * Set-up of section 10 (not timed): `count` jobs of `LOOP_JOB`, their `list`
 * steps claimed and completed by `workerId` (registered already), so each
 * loop step is ready and waits for `expandLoop`; then `ANALYZE`. Job ids in
 * order.
 */
async function seedLoops(db: Database, count: number, workerId: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 2000) {
    const n = Math.min(2000, count - i);
    ids.push(
      ...(await createMany(
        db,
        Array.from({ length: n }, () => ({
          job: { taskName: "bench-loop", sourceType: "api" as const },
          steps: LOOP_JOB,
        })),
      )),
    );
  }
  let listed = 0;
  while (listed < count) {
    const lists = await claimMany(db, CAPS, workerId, Math.min(CLAIM_LIMIT, count - listed));
    if (lists.length === 0) throw new Error(`only ${listed}/${count} list steps became ready`);
    await reportAll(db, lists, workerId);
    listed += lists.length;
  }
  await db.execute("analyze");
  return ids;
}

/** Completes claimed steps with `reportMany` (output: an instance's index, null for a list), a chunk a call; throws on a refusal. */
async function reportAll(db: Database, steps: readonly JobStep[], workerId: string): Promise<void> {
  for (let i = 0; i < steps.length; i += REPORT_CHUNK) {
    const results = await reportMany(
      db,
      steps.slice(i, i + REPORT_CHUNK).map((s) => ({
        jobId: s.jobId,
        stepName: s.stepName,
        workerId,
        attempt: s.attempts,
        outcome: "completed" as const,
        output: s.loopIndex,
      })),
    );
    const refused = results.find((r) => !r.ok);
    if (refused && !refused.ok) throw refused.error;
  }
}

/** Items of a loop of `n`. */
const loopItems = (n: number) => Array.from({ length: n }, (_, i) => ({ i }));

/**
 * Section 10's check: each of `jobIds` has its loop step completed with
 * `size` outputs (with `indexOutputs`, each instance's index, in index
 * order) and `after` ready (promoted by the last instance, untakeable by the
 * bench's workers); every instance and `list` completed after exactly one
 * claim, and only the loop steps finished unclaimed.
 */
export async function checkLoops(
  url: string,
  jobIds: readonly string[],
  size: number,
  indexOutputs: boolean,
): Promise<string[]> {
  return withPool(url, async (db) => {
    const loops = jobIds.length;
    const problems: string[] = [];
    const audit = await JobStepRepo.audit(db, jobIds);
    const steps = loops * (size + 2);
    if (audit.byStatus.completed !== steps)
      problems.push(`${audit.byStatus.completed}/${steps} steps completed (instances, lists, loop steps)`);
    if (audit.byStatus.ready !== loops) problems.push(`${audit.byStatus.ready}/${loops} steps ready (the afters)`);
    if (audit.claimedMoreThanOnce > 0) problems.push(`${audit.claimedMoreThanOnce} steps with attempts > 1`);
    if (audit.finishedUnclaimed !== loops)
      problems.push(`${audit.finishedUnclaimed} steps finished unclaimed (${loops} loop steps expected)`);
    const { rows } = await db.execute<{ job_id: string; step_name: string; status: string; output: unknown }>(
      sql`select job_id, step_name, status, output from job_step_state
          where job_id = any(${sql.param(jobIds)}::uuid[]) and step_name in (${LOOP_STEP}, 'after')`,
    );
    const by = new Map(rows.map((r) => [`${r.job_id}/${r.step_name}`, r]));
    for (const jobId of jobIds) {
      const loop = by.get(`${jobId}/${LOOP_STEP}`);
      const after = by.get(`${jobId}/after`);
      if (loop?.status !== "completed") problems.push(`loop step of ${jobId} ${loop?.status ?? "missing"}`);
      else if (!Array.isArray(loop.output) || loop.output.length !== size)
        problems.push(
          `loop step of ${jobId}: ${Array.isArray(loop.output) ? loop.output.length : "no"} outputs, not ${size}`,
        );
      else if (indexOutputs && loop.output.some((v, i) => v !== i))
        problems.push(`loop step of ${jobId}: outputs not in index order`);
      if (after?.status !== "ready") problems.push(`after of ${jobId} ${after?.status ?? "missing"}, not ready`);
    }
    return problems;
  });
}

export interface LoopDrain extends Throughput {
  /** The `expandLoop` call, ms. */
  expandMs: number;
}

/**
 * Section 10a: one job list -> each -> after, `list` completed, then
 * `expandLoop` of `instances` items (timed on its own; `ANALYZE` after it,
 * not timed, as the flat queue's seeding ends with one), then `workers`
 * workers claiming `batch` at a time drain the instances until the last
 * report completes the loop and makes `after` ready. Instances/s from the
 * workers' start to the last report.
 */
export async function oursLoopDrain(
  url: string,
  instances: number,
  workers: number,
  batch: number,
): Promise<LoopDrain> {
  const { jobId, expandMs, problems } = await withPool(url, async (db) => {
    const workerId = randomUUID();
    await registerWorker(db, workerId, CAPS);
    const [jobId] = await seedLoops(db, 1, workerId);
    const ref = { jobId: jobId!, stepName: LOOP_STEP };
    const items = loopItems(instances);
    const t0 = performance.now();
    const expanded = await expandLoop(db, ref, items);
    const expandMs = performance.now() - t0;
    await db.execute("analyze");
    const problems =
      expanded.instances === instances ? [] : [`expandLoop made ${expanded.instances}/${instances} instances`];
    return { jobId: jobId!, expandMs, problems };
  });
  const probe = await startCost(url);
  const run = await drive({ url, workers, batch, expected: instances });
  const cost = await probe.stop();
  problems.push(...(await checkLoops(url, [jobId], instances, false)));
  if (run.duplicates > 0) problems.push(`${run.duplicates} instances handed out twice`);
  return {
    rate: run.reported / run.seconds,
    expandMs,
    problems,
    reportShare: run.reportMs / (run.seconds * 1000 * workers),
    cost,
  };
}

/**
 * Section 10a's other side: the loop's shape declared up front, one job of
 * `steps` ready steps -> after (`wide`, created by createMany), drained by
 * the same workers: what the loop costs beyond its steps being one job's.
 * Checked: every step completed after one claim, `after` ready.
 */
export async function oursWideDrain(url: string, steps: number, workers: number, batch: number): Promise<Throughput> {
  await withPool(url, (db) => seedJobs(db, 1, wide(steps)));
  const run = await drive({ url, workers, batch, expected: steps });
  const problems = await withPool(url, async (db) => {
    const audit = await JobStepRepo.audit(db);
    const out: string[] = [];
    if (audit.byStatus.completed !== steps) out.push(`${audit.byStatus.completed}/${steps} steps completed`);
    if (audit.byStatus.ready !== 1) out.push(`${audit.byStatus.ready}/1 steps ready (after)`);
    if (audit.claimedMoreThanOnce > 0) out.push(`${audit.claimedMoreThanOnce} steps with attempts > 1`);
    return out;
  });
  if (run.duplicates > 0) problems.push(`${run.duplicates} steps handed out twice`);
  return { rate: run.reported / run.seconds, problems };
}

export interface LoopReports {
  /** Each timed instance report (`complete`, never a loop's last), ms. */
  reportMs: number[];
  /** Each loop's last instance report (it completes the loop, collecting the outputs), ms. */
  lastMs: number[];
  /** Each `expandLoop` call, ms. */
  expandMs: number[];
  loops: number;
  problems: string[];
}

/**
 * Section 10c–e: the cost of one instance's report in a loop of `size`.
 * One worker on one connection: loops of `size`, as many as make `total`
 * instances (so that a small loop and a large one are compared on tables of
 * the same size) and at least enough for the sample, are expanded (each
 * call timed), every instance claimed (not timed), then the instances
 * reported one by one in claim order, each loop's last-claimed instance
 * held back: after `warmUp` untimed `complete`s, `sample` of them spread
 * evenly over the rest are timed (`complete`, one statement each), the
 * others completed untimed by `reportMany` between them; then each loop's
 * held-back instance, timed apart (its report completes the loop: the
 * outputs collected once). Checked as `checkLoops`, outputs in index order.
 */
export async function oursLoopReports(
  url: string,
  size: number,
  sample: number,
  total = size,
  warmUp = 2,
): Promise<LoopReports> {
  const loops = Math.max(Math.ceil(total / size), Math.ceil((sample + warmUp) / Math.max(1, size - 1)));
  const problems: string[] = [];
  const reportMs: number[] = [];
  const lastMs: number[] = [];
  const expandMs: number[] = [];
  const db = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-worker" });
  let jobIds: string[];
  try {
    const workerId = randomUUID();
    await registerWorker(db, workerId, CAPS);
    jobIds = await seedLoops(db, loops, workerId);
    for (const jobId of jobIds) {
      const items = loopItems(size);
      const t0 = performance.now();
      const expanded = await expandLoop(db, { jobId, stepName: LOOP_STEP }, items);
      expandMs.push(performance.now() - t0);
      if (expanded.instances !== size) problems.push(`expandLoop made ${expanded.instances}/${size} instances`);
    }
    await db.execute("analyze");
    const claimed: JobStep[] = [];
    while (claimed.length < loops * size) {
      const got = await claimMany(db, CAPS, workerId, Math.min(CLAIM_LIMIT, loops * size - claimed.length));
      if (got.length === 0) throw new Error(`only ${claimed.length}/${loops * size} instances ready`);
      claimed.push(...got);
    }
    const last = new Map<string, JobStep>();
    for (const s of claimed) last.set(s.jobId, s);
    const held = new Set(last.values());
    const others = claimed.filter((s) => !held.has(s));
    const span = others.length - warmUp;
    const timed = new Set<number>();
    for (let k = 0; k < sample; k++) timed.add(warmUp + Math.floor((k * span) / sample));
    const report = async (s: JobStep) => {
      const t0 = performance.now();
      const r = await complete(
        db,
        { jobId: s.jobId, stepName: s.stepName, workerId, attempt: s.attempts },
        s.loopIndex,
      );
      return { ms: performance.now() - t0, promoted: r.promoted };
    };
    let untimed: JobStep[] = [];
    for (const [i, s] of others.entries()) {
      if (i >= warmUp && !timed.has(i)) {
        untimed.push(s);
        continue;
      }
      await reportAll(db, untimed, workerId);
      untimed = [];
      const r = await report(s);
      if (i >= warmUp) reportMs.push(r.ms);
      if (r.promoted.length > 0) problems.push(`${s.stepName}, not its loop's last, promoted ${r.promoted.join(", ")}`);
    }
    await reportAll(db, untimed, workerId);
    for (const s of held) {
      const r = await report(s);
      lastMs.push(r.ms);
      if (r.promoted.join() !== "after")
        problems.push(`a loop's last instance promoted [${r.promoted.join(", ")}], not [after]`);
    }
  } finally {
    await db.$client.end();
  }
  problems.push(...(await checkLoops(url, jobIds, size, true)));
  return { reportMs, lastMs, expandMs, loops, problems };
}
