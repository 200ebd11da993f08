import { randomBytes, randomUUID } from "node:crypto";
import { dropDatabase, startEmbeddedPostgres, withClient, withDatabase } from "@stroem/embedded-pg";
import { planAdvance } from "@stroem/orchestrator";
import {
  createPool,
  type Database,
  JobRepo,
  JobStepRepo,
  type NewFlowStep,
  redactUrl,
  runMigrations,
  storedFlow,
  WorkerRepo,
} from "@stroem/repos";
import type { ActionType, JobStatus } from "@stroem/schema";
import { bar, duration, table } from "./format.js";
import { renderText } from "./graph.js";

/** A CI/CD pipeline: checkout, three checks in parallel, package, deploy, and a notification that always runs. */
export const PIPELINE: readonly NewFlowStep[] = [
  {
    stepName: "checkout",
    actionName: "git-clone",
    actionType: "shell",
    actionSpec: { cmd: "git clone --depth 1 $REPO ." },
  },
  {
    stepName: "lint",
    actionName: "eslint",
    actionType: "shell",
    dependsOn: ["checkout"],
    actionSpec: { cmd: "npx eslint ." },
  },
  {
    stepName: "unit-tests",
    actionName: "vitest",
    actionType: "docker",
    actionImage: "node:20",
    dependsOn: ["checkout"],
    actionSpec: { cmd: "npm test" },
  },
  {
    stepName: "build",
    actionName: "npm-build",
    actionType: "docker",
    actionImage: "node:20",
    dependsOn: ["checkout"],
    actionSpec: { cmd: "npm ci && npm run build" },
  },
  {
    stepName: "package",
    actionName: "docker-build",
    actionType: "docker",
    actionImage: "docker:27",
    dependsOn: ["lint", "unit-tests", "build"],
    actionSpec: { cmd: "docker build -t app ." },
  },
  {
    stepName: "deploy",
    actionName: "kubectl-apply",
    actionType: "shell",
    dependsOn: ["package"],
    actionSpec: { cmd: "kubectl apply -f k8s/" },
  },
  {
    stepName: "notify",
    actionName: "slack-notify",
    actionType: "shell",
    dependsOn: ["deploy"],
    continueOnFailure: true,
    actionSpec: { channel: "#deploys" },
  },
];

/** Worker i's capabilities: the first runs everything, then shell-only, docker-only, both, ... */
export function capabilitiesOf(i: number): ActionType[] {
  return i === 0
    ? ["shell", "docker"]
    : (([["shell"], ["docker"], ["shell", "docker"]] as ActionType[][])[(i - 1) % 3] ?? ["shell"]);
}

export interface DemoOptions {
  jobs: number;
  workers: number;
  /** Probability that a step fails, 0 to 1. */
  failRate: number;
  seed: number;
  /** An existing server: the demo works in a database of its own there and drops it. Default: embedded PostgreSQL. */
  url?: string;
  /** Where progress and the report go. */
  out: NodeJS.WritableStream & { isTTY?: boolean };
  signal?: AbortSignal;
  /** Longest simulated step, ms. Default 40. */
  maxStepMs?: number;
}

export interface DemoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DemoReport {
  ok: boolean;
  interrupted: boolean;
  checks: DemoCheck[];
  jobs: Record<JobStatus, number>;
  steps: Record<string, number>;
  wallMs: number;
}

/** Deterministic per-step outcome from the seed, whichever worker runs the step. */
export function stepOutcome(seed: number, jobIndex: number, stepName: string, failRate: number, maxMs: number) {
  let h = 2166136261 ^ seed;
  for (const ch of `${jobIndex}:${stepName}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  const next = () => {
    h = (h + 0x6d2b79f5) | 0;
    let t = Math.imul(h ^ (h >>> 15), 1 | h);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { fail: next() < failRate, ms: Math.round(2 + next() * (maxMs - 2)) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs the demo end to end: server, migrations, jobs, concurrent workers,
 * live progress, then the report and the database checks. Always stops what
 * it started (the embedded server and its files, or its database on `url`).
 */
export async function runDemo(o: DemoOptions): Promise<DemoReport> {
  const say = (line = "") => o.out.write(`${line}\n`);
  const maxStepMs = o.maxStepMs ?? 40;
  const cleanup: Array<() => Promise<void>> = [];
  try {
    let url: string;
    if (o.url) {
      const name = `stroem_demo_${randomBytes(4).toString("hex")}`;
      await withClient(o.url, (c) => c.query(`create database ${c.escapeIdentifier(name)}`));
      const adminUrl = o.url;
      cleanup.push(() => dropDatabase(adminUrl, name));
      url = withDatabase(o.url, name);
      say(`Using database ${name} on ${redactUrl(o.url)} (dropped at the end).`);
    } else {
      say("Starting an embedded PostgreSQL…");
      const server = await startEmbeddedPostgres();
      cleanup.push(() => server.stop());
      url = withDatabase(server.url, "postgres");
      say(`Embedded PostgreSQL is up at ${redactUrl(server.url)} (files in ${server.dataDir}).`);
    }
    const db = createPool(url, { max: 4, applicationName: "stroem-demo" });
    cleanup.push(() => db.$client.end());
    const migrated = await runMigrations(db);
    say(`Migrated: ${migrated.applied.length ? migrated.applied.join(", ") : "already up to date"}.`);
    return await run(db, url, o, maxStepMs, say);
  } finally {
    for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
  }
}

async function run(
  db: Database,
  url: string,
  o: DemoOptions,
  maxStepMs: number,
  say: (line?: string) => void,
): Promise<DemoReport> {
  const jobIds: string[] = [];
  for (let i = 0; i < o.jobs; i++) {
    jobIds.push(
      await JobRepo.createWithSteps(
        db,
        {
          workspace: "demo",
          taskName: "ci-pipeline",
          sourceType: "trigger",
          sourceId: `push-${i}`,
          input: { commit: i },
        },
        PIPELINE,
      ),
    );
  }
  const jobIndex = new Map(jobIds.map((id, i) => [id, i]));
  say(`Created ${o.jobs} jobs of ${PIPELINE.length} steps; starting ${o.workers} workers.`);

  const stats = { executed: 0, completed: 0, failed: 0, skipped: 0, running: 0 };
  const finished = new Set<string>();
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  o.signal?.addEventListener("abort", onAbort);
  const started = Date.now();
  let lastProgress = Date.now();
  let workerError: unknown;

  const worker = async (i: number) => {
    const caps = capabilitiesOf(i);
    const wdb = createPool(url, { max: 2, applicationName: `stroem-demo-worker-${i}` });
    const workerId = randomUUID();
    let beat: NodeJS.Timeout | undefined;
    try {
      await WorkerRepo.register(wdb, { workerId, name: `demo-worker-${i} (${caps.join("+")})`, capabilities: caps });
      beat = setInterval(() => void WorkerRepo.heartbeat(wdb, workerId).catch(() => undefined), 500);
      // Idle workers back off (5 ms doubling to 80 ms) so polling does not
      // crowd out the workers that have steps to run.
      let idleMs = 5;
      while (!stop.signal.aborted && finished.size < o.jobs) {
        const step = await JobStepRepo.claimReadyStep(wdb, caps, workerId);
        if (!step) {
          await sleep(idleMs);
          idleMs = Math.min(idleMs * 2, 80);
          continue;
        }
        idleMs = 5;
        stats.running++;
        const { fail, ms } = stepOutcome(o.seed, jobIndex.get(step.jobId) ?? -1, step.stepName, o.failRate, maxStepMs);
        await sleep(ms);
        const result = await wdb.transaction(async (tx) => {
          // Guarded: only this worker, in this claim, may report the step.
          const guard = { workerId, attempt: step.attempts };
          if (fail)
            await JobStepRepo.markFailed(tx, step.jobId, step.stepName, `simulated failure (seed ${o.seed})`, guard);
          else await JobStepRepo.markCompleted(tx, step.jobId, step.stepName, { durationMs: ms, worker: i }, guard);
          return JobRepo.advance(tx, step.jobId);
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

  const total = o.jobs * PIPELINE.length;
  const progress = () => {
    const elapsed = (Date.now() - started) / 1000;
    const done = stats.completed + stats.failed + stats.skipped;
    return `jobs ${String(finished.size).padStart(String(o.jobs).length)}/${o.jobs} ${bar(finished.size / Math.max(1, o.jobs))} steps: ✔ ${stats.completed} ✘ ${stats.failed} ⊘ ${stats.skipped} ▶ ${stats.running} of ${total}  ${(stats.executed / Math.max(elapsed, 0.001)).toFixed(0)} steps/s  (${Math.round((100 * done) / Math.max(1, total))}%)`;
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
  say(progress());
  const wallMs = Date.now() - started;
  const interrupted = o.signal?.aborted === true;
  if (workerError) throw workerError;

  // ---- report, from the database
  const jobs = await JobRepo.countByStatus(db);
  const audit = await JobStepRepo.audit(db, jobIds);
  say();
  say(
    table(
      ["summary", ""],
      [
        ["jobs completed", jobs.completed],
        ["jobs failed", jobs.failed],
        ["steps completed", audit.byStatus.completed],
        ["steps failed", audit.byStatus.failed],
        ["steps skipped", audit.byStatus.skipped],
        ["wall time", duration(wallMs)],
        ["throughput", `${(stats.executed / (wallMs / 1000)).toFixed(1)} steps/s`],
      ],
    ),
  );

  const firstFailed = (await JobRepo.list(db, { workspace: "demo", status: "failed", limit: 1000, offset: 0 })).sort(
    (a, b) => (jobIndex.get(a.jobId) ?? 0) - (jobIndex.get(b.jobId) ?? 0),
  )[0];
  if (firstFailed) {
    say();
    say(`A failed job, ${firstFailed.jobId} (#${jobIndex.get(firstFailed.jobId)}):`);
    say(renderText(await JobStepRepo.getStepsForJob(db, firstFailed.jobId)));
  }

  const checks: DemoCheck[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  if (!interrupted) {
    const terminal = jobs.completed + jobs.failed;
    check("every job is terminal", terminal === o.jobs && jobs.pending + jobs.running === 0, `${terminal}/${o.jobs}`);
    const open = audit.byStatus.pending + audit.byStatus.ready + audit.byStatus.running;
    check("no step left pending, ready or running", open === 0, `${open} open`);
  }
  check(
    "no step was claimed twice",
    audit.claimedMoreThanOnce === 0,
    `${audit.claimedMoreThanOnce} claimed more than once`,
  );
  check(
    "every finished step went through a claim",
    audit.finishedUnclaimed === 0,
    `${audit.finishedUnclaimed} unclaimed`,
  );
  const recorded = audit.byStatus.completed + audit.byStatus.failed;
  check(
    "each executed step was recorded exactly once",
    recorded === stats.executed,
    `${stats.executed} executed, ${recorded} recorded`,
  );
  if (!interrupted) {
    let mismatched = 0;
    for (const jobId of jobIds) {
      const [row, steps] = await Promise.all([JobRepo.get(db, jobId), JobStepRepo.getStepsForJob(db, jobId)]);
      const plan = planAdvance(steps, storedFlow(steps));
      if (plan.jobOutcome !== row?.status || plan.promote.length || plan.skip.length) mismatched++;
    }
    check("job outcomes follow the orchestrator's rules", mismatched === 0, `${mismatched} mismatched`);
  }
  say();
  say(interrupted ? "Interrupted: workers stopped. Checks on what ran:" : "Checks:");
  for (const c of checks) say(`  ${c.ok ? "✔" : "✘"} ${c.name} (${c.detail})`);
  return { ok: checks.every((c) => c.ok), interrupted, checks, jobs, steps: audit.byStatus, wallMs };
}
