/**
 * The chaos run: worker processes run DAG jobs while workers are SIGKILLed
 * (and replaced), random backends terminated (`pg_terminate_backend`) and
 * the server restarted; maintenance runs throughout. Then the database and
 * the workers' logs are checked: every step completed, each with the output
 * of the attempt that holds it; no report accepted twice; no job unfinished.
 * Used by the suite (`test/chaos.test.ts`) and by `pnpm chaos` (longer).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningServer, startEmbeddedPostgres, withClient, withDatabase } from "@stroem/embedded-pg";
import { createPool, type Database, JobRepo, type NewFlowStep, runMigrations, startMaintenance } from "@stroem/repos";
import { sql } from "../sql.js";
import { prng } from "./random.js";
import type { ChaosWorkerConfig } from "./worker.js";

export interface ChaosOptions {
  /** Jobs, each the flow below (6 steps: a diamond and a join). */
  jobs: number;
  /** Worker processes running at once (killed ones are replaced). */
  workers: number;
  /** Seed of every random choice (fault points, victims, step durations). */
  seed: number;
  /** Workers SIGKILLed per 1,000 steps (spread over the run by progress). */
  killRate: number;
  /** Backends terminated per 1,000 steps. */
  terminateRate: number;
  /** Server restarts in the run. */
  restarts: number;
  /**
   * Restart as a crash (immediate shutdown, recovery from the WAL) on a
   * durable server (fsync and synchronous commit on); else a fast shutdown
   * (every connection dropped, transactions in flight rolled back) on a
   * server with fsync off, which is several times faster on a busy disk.
   */
  crash: boolean;
  /** Create the jobs in waves over this many seconds (0: all at once). */
  durationSecs: number;
  /** The run fails if the jobs are not all finished within this many ms. */
  budgetMs: number;
  /** Longest simulated step, ms. */
  maxStepMs: number;
  /** Progress lines. */
  log: (line: string) => void;
}

export const CHAOS_DEFAULTS: ChaosOptions = {
  jobs: 200,
  workers: 4,
  seed: 1,
  killRate: 8,
  terminateRate: 15,
  restarts: 1,
  crash: false,
  durationSecs: 0,
  budgetMs: 110_000,
  maxStepMs: 10,
  log: () => {},
};

/** a → b, c → d (a diamond), d and e → f (a join). */
export const CHAOS_FLOW: NewFlowStep[] = [
  { stepName: "a", actionName: "x", actionType: "shell" },
  { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
  { stepName: "c", actionName: "x", actionType: "shell", dependsOn: ["a"] },
  { stepName: "d", actionName: "x", actionType: "shell", dependsOn: ["b", "c"] },
  { stepName: "e", actionName: "x", actionType: "shell" },
  { stepName: "f", actionName: "x", actionType: "shell", dependsOn: ["d", "e"] },
];

/** What the run saw and did. */
export interface ChaosResult {
  seed: number;
  jobs: number;
  steps: number;
  workersStarted: number;
  kills: number;
  terminations: number;
  restarts: number;
  /** Steps given back (rescued or orphaned), from the steps' retry history. */
  rescues: number;
  /** Reports the workers logged as accepted (repeated ones included). */
  reports: number;
  repeatedReports: number;
  maintenanceErrors: number;
  seconds: number;
  /** Every check that failed, in words; empty when the run passed. */
  failures: string[];
}

// The built worker, also when this module runs from its TypeScript source (vitest).
const here = fileURLToPath(import.meta.url);
const WORKER = here.endsWith(".ts")
  ? path.join(path.dirname(here), "../../dist/chaos/worker.js")
  : path.join(path.dirname(here), "worker.js");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Heartbeat and maintenance timings of the run: short, so a killed worker's step comes back in about 3 s. */
const HEARTBEAT_MS = 250;
const STALE_AFTER_MS = 3000;
/** Longest a teardown step may take (see `bounded`). */
const TEARDOWN_MS = 30_000;

/**
 * Runs the chaos scenario on an embedded PostgreSQL of its own (started and
 * removed here) and returns the counts and the checks that failed. Throws
 * only if the server cannot start.
 */
export async function runChaos(partial: Partial<ChaosOptions> = {}): Promise<ChaosResult> {
  const o: ChaosOptions = { ...CHAOS_DEFAULTS, ...partial };
  const started = Date.now();
  const random = prng(o.seed);
  const steps = o.jobs * CHAOS_FLOW.length;
  const logDir = await mkdtemp(path.join(tmpdir(), "stroem-chaos-"));
  // A crash needs a durable server (fsync and synchronous commit on): with
  // them off it may lose what was acknowledged, and the checks would blame
  // the repos for the server's settings. A fast shutdown loses nothing either way.
  const server: RunningServer = await startEmbeddedPostgres({ fast: !o.crash });
  const workers = new Map<string, ChildProcess>();
  let db: Database | undefined;
  let maintenance: { stop(): Promise<void> } | undefined;
  let maintenanceDb: Database | undefined;
  let stopping = false;
  const result: ChaosResult = {
    seed: o.seed,
    jobs: o.jobs,
    steps,
    workersStarted: 0,
    kills: 0,
    terminations: 0,
    restarts: 0,
    rescues: 0,
    reports: 0,
    repeatedReports: 0,
    maintenanceErrors: 0,
    seconds: 0,
    failures: [],
  };
  o.log(`server up at ${server.url.replace(/:[^:@/]*@/, ":***@")} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  /**
   * Waits for a teardown step, at most TEARDOWN_MS: a step that hangs is a
   * failure named in the result (not a hung test that leaks its server).
   */
  const bounded = async (what: string, step: Promise<unknown> | undefined) => {
    if (!step) return;
    let timer: NodeJS.Timeout | undefined;
    const hung = await Promise.race([
      step.then(
        () => false,
        () => false,
      ),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), TEARDOWN_MS);
      }),
    ]);
    clearTimeout(timer);
    if (hung) result.failures.push(`${what} did not finish within ${TEARDOWN_MS / 1000} s`);
  };
  try {
    await withClient(server.url, (c) => c.query("create database chaos"));
    const url = withDatabase(server.url, "chaos");
    db = createPool(url, { max: 4, applicationName: "stroem-chaos-harness", onConnectionError: () => {} });
    const harness = db;
    await runMigrations(harness);
    o.log(`database migrated (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    maintenanceDb = createPool(url, {
      max: 2,
      applicationName: "stroem-chaos-maintenance",
      onConnectionError: () => {},
    });
    maintenance = startMaintenance(maintenanceDb, {
      staleAfterMs: STALE_AFTER_MS,
      rescueEveryMs: 250,
      timeoutsEveryMs: 500,
      inactiveAfterMs: 2 * STALE_AFTER_MS,
      inactiveEveryMs: 1000,
      statementTimeoutMs: 5000, // a hung sweep is given up after 20 s
      onError: () => {
        result.maintenanceErrors++;
      },
    });

    const spawnWorker = () => {
      const n = result.workersStarted++;
      const workerId = randomUUID();
      const config: ChaosWorkerConfig = {
        url,
        workerId,
        name: `w${n}`,
        logFile: path.join(logDir, `w${n}.jsonl`),
        heartbeatMs: HEARTBEAT_MS,
        maxStepMs: o.maxStepMs,
        seed: (o.seed * 1000 + n) >>> 0,
      };
      const child = spawn(process.execPath, [WORKER, JSON.stringify(config)], {
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      });
      child.once("exit", (code, signal) => {
        workers.delete(workerId);
        // Workers never stop on their own: only our SIGKILL (a fault) or SIGTERM (the end) stops them.
        if (signal !== "SIGKILL" && signal !== "SIGTERM" && !stopping) {
          result.failures.push(`worker ${config.name} exited by itself (${signal ?? `code ${code}`})`);
        }
      });
      workers.set(workerId, child);
    };
    for (let i = 0; i < o.workers; i++) spawnWorker();

    // The faults, at seeded points of progress (fractions of the steps completed).
    type Fault = { at: number; kind: "kill" | "terminate" | "restart" };
    const points = (n: number, kind: Fault["kind"]): Fault[] =>
      Array.from({ length: n }, () => ({ at: 0.05 + random() * 0.85, kind }));
    const faults = [
      ...points(Math.round((o.killRate * steps) / 1000), "kill"),
      ...points(Math.round((o.terminateRate * steps) / 1000), "terminate"),
      ...Array.from({ length: o.restarts }, (_, i) => ({ at: (i + 1) / (o.restarts + 1), kind: "restart" as const })),
    ].sort((x, y) => x.at - y.at);
    o.log(
      `seed ${o.seed} (${o.crash ? "crash restarts, durable server" : "fast restarts, fsync off"}): ${o.jobs} jobs (${steps} steps), ${o.workers} workers; planned: ${faults.filter((f) => f.kind === "kill").length} kills, ${faults.filter((f) => f.kind === "terminate").length} terminations, ${o.restarts} restarts`,
    );

    // Jobs: all at once, or in waves over durationSecs.
    const waves = o.durationSecs > 0 ? Math.max(1, Math.round(o.durationSecs * 2)) : 1;
    let created = 0;
    const createWave = async () => {
      const n = Math.min(o.jobs - created, Math.ceil(o.jobs / waves));
      for (let first = 0; first < n; first += 500) {
        const items = Array.from({ length: Math.min(500, n - first) }, (_, k) => ({
          job: { taskName: "chaos", sourceType: "api" as const, input: { n: created + first + k } },
          steps: CHAOS_FLOW,
        }));
        await persist(() => JobRepo.createMany(harness, items));
      }
      created += n;
    };
    await createWave();
    let nextWave = Date.now() + 500;

    const completedSteps = async () =>
      Number(
        (
          await harness.execute<{ n: number }>(
            sql`select count(*)::int as n from job_step_state where status = 'completed'`,
          )
        ).rows[0]?.n ?? 0,
      );
    const unfinishedJobs = async () =>
      Number(
        (await harness.execute<{ n: number }>(sql`select count(*)::int as n from job_state where completed_at is null`))
          .rows[0]?.n ?? 0,
      );

    const inject = async (kind: Fault["kind"]): Promise<void> => {
      if (kind === "kill") {
        const ids = [...workers.keys()].sort();
        const victim = ids[Math.floor(random() * ids.length)];
        const child = victim ? workers.get(victim) : undefined;
        if (!child) return;
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
        result.kills++;
        spawnWorker();
      } else if (kind === "terminate") {
        const pids = await harness
          .execute<{ pid: number }>(
            sql`select pid from pg_stat_activity where datname = 'chaos' and application_name like 'stroem-chaos-w%' order by pid`,
          )
          .then((r) => r.rows.map((row) => row.pid))
          .catch(() => [] as number[]);
        const pid = pids[Math.floor(random() * pids.length)];
        if (pid === undefined) return;
        const killed = await harness
          .execute<{ ok: boolean }>(sql`select pg_terminate_backend(${pid}) as ok`)
          .then((r) => r.rows[0]?.ok === true)
          .catch(() => false);
        if (killed) result.terminations++;
      } else {
        o.log(`  restarting the server (${o.crash ? "immediate shutdown, as a crash" : "fast shutdown"})`);
        await server.restart?.({ immediate: o.crash, downMs: 500 });
        result.restarts++;
      }
    };

    const deadline = started + o.budgetMs;
    let lastLog = 0;
    for (;;) {
      if (Date.now() > deadline) {
        result.failures.push(`not finished within the budget of ${o.budgetMs} ms`);
        break;
      }
      if (created < o.jobs && Date.now() >= nextWave) {
        await createWave();
        nextWave += 500;
      }
      const done = await completedSteps().catch(() => undefined);
      if (done === undefined) {
        await sleep(100); // the server is restarting
        continue;
      }
      while (faults.length > 0 && (faults[0] as Fault).at * steps <= done && Date.now() <= deadline) {
        const fault = faults.shift() as Fault;
        await inject(fault.kind);
      }
      if (Date.now() - lastLog > 2000) {
        lastLog = Date.now();
        o.log(
          `  ${done}/${steps} steps completed; kills ${result.kills}, terminations ${result.terminations}, restarts ${result.restarts}`,
        );
      }
      if (created === o.jobs && (await unfinishedJobs().catch(() => 1)) === 0) break;
      await sleep(50);
    }

    // Stop the workers, then check.
    stopping = true;
    await bounded(
      "the workers' exit after SIGTERM",
      Promise.all(
        [...workers.values()].map((child) => {
          const exited = new Promise((r) => child.once("exit", r));
          child.kill("SIGTERM");
          return exited;
        }),
      ),
    );
    o.log("workers stopped");
    await bounded("maintenance.stop()", maintenance.stop());
    maintenance = undefined;
    o.log("maintenance stopped");
    await check(harness, logDir, result);
    o.log("checked");
  } finally {
    for (const child of workers.values()) child.kill("SIGKILL");
    await bounded("maintenance.stop()", maintenance?.stop());
    await bounded("the harness pool's end()", db?.$client.end());
    o.log("harness pool ended");
    await bounded("the maintenance pool's end()", maintenanceDb?.$client.end());
    o.log("maintenance pool ended");
    await server.stop();
    o.log("server stopped");
    await rm(logDir, { recursive: true, force: true });
    result.seconds = (Date.now() - started) / 1000;
  }
  return result;
}

/** Runs `fn` until it does not throw (the server may be restarting), at most 100 times. */
async function persist<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= 100) throw error;
      await sleep(100);
    }
  }
}

interface LogLine {
  jobId: string;
  stepName: string;
  attempt: number;
  worker: string;
  repeated: boolean;
}

/** The checks: the database and the workers' logs agree, and nothing is left undone. */
async function check(db: Database, logDir: string, result: ChaosResult): Promise<void> {
  const fail = (what: string) => result.failures.push(what);
  const { rows: steps } = await db.execute<{
    job_id: string;
    step_name: string;
    status: string;
    attempts: number;
    worker_id: string | null;
    output: { worker?: string; attempt?: number } | null;
    history: number;
  }>(
    sql`select job_id, step_name, status, attempts, worker_id, output, jsonb_array_length(retry_history) as history from job_step_state`,
  );
  const { rows: jobs } = await db.execute<{ status: string; n: number }>(
    sql`select status, count(*)::int as n from job_state group by status`,
  );
  if (steps.length !== result.steps) fail(`${steps.length} steps in the database, expected ${result.steps}`);
  const notCompleted = steps.filter((s) => s.status !== "completed");
  if (notCompleted.length > 0) {
    const by = new Map<string, number>();
    for (const s of notCompleted) by.set(s.status, (by.get(s.status) ?? 0) + 1);
    fail(`steps not completed: ${[...by].map(([k, v]) => `${v} ${k}`).join(", ")}`);
  }
  const unfinished = jobs.filter((j) => j.status !== "completed");
  if (unfinished.length > 0) fail(`jobs not completed: ${unfinished.map((j) => `${j.n} ${j.status}`).join(", ")}`);
  const wrongOutput = steps.filter(
    (s) => s.status === "completed" && (s.output?.worker !== s.worker_id || s.output?.attempt !== Number(s.attempts)),
  );
  if (wrongOutput.length > 0) {
    fail(
      `${wrongOutput.length} completed steps hold another attempt's output (e.g. ${JSON.stringify(wrongOutput[0])})`,
    );
  }
  result.rescues = steps.reduce((n, s) => n + Number(s.history), 0);

  const lines: LogLine[] = [];
  for (const file of await readdir(logDir)) {
    const text = await readFile(path.join(logDir, file), "utf8");
    for (const line of text.split("\n")) if (line.trim()) lines.push(JSON.parse(line) as LogLine);
  }
  result.reports = lines.length;
  result.repeatedReports = lines.filter((l) => l.repeated).length;
  const accepted = new Map<string, number>();
  for (const l of lines.filter((x) => !x.repeated)) {
    const k = `${l.jobId}/${l.stepName}/${l.attempt}`;
    accepted.set(k, (accepted.get(k) ?? 0) + 1);
  }
  const twice = [...accepted].filter(([, n]) => n > 1);
  if (twice.length > 0) fail(`${twice.length} reports accepted twice (e.g. ${twice[0]?.[0]})`);
  const byStep = new Map(steps.map((s) => [`${s.job_id}/${s.step_name}`, s]));
  const foreign = lines.filter((l) => {
    const s = byStep.get(`${l.jobId}/${l.stepName}`);
    return !s || s.worker_id !== l.worker || Number(s.attempts) !== l.attempt;
  });
  if (foreign.length > 0) {
    fail(
      `${foreign.length} accepted reports are not the outcome the database holds (e.g. ${JSON.stringify(foreign[0])})`,
    );
  }
  // Every completed step was reported by a worker (a SIGKILL may lose the log line of a report in flight, not more).
  const logged = new Set(lines.map((l) => `${l.jobId}/${l.stepName}`));
  const unlogged = steps.filter((s) => !logged.has(`${s.job_id}/${s.step_name}`)).length;
  if (unlogged > result.kills)
    fail(`${unlogged} completed steps have no accepted report in the logs (kills: ${result.kills})`);
}

/** The summary table (markdown). */
export function chaosTable(r: ChaosResult): string {
  const rows: [string, string][] = [
    ["seed", String(r.seed)],
    ["jobs / steps", `${r.jobs} / ${r.steps}`],
    ["workers started", String(r.workersStarted)],
    ["workers killed (SIGKILL)", String(r.kills)],
    ["backends terminated", String(r.terminations)],
    ["server restarts", String(r.restarts)],
    ["steps given back (rescues, orphans)", String(r.rescues)],
    ["reports accepted (of them repeated)", `${r.reports} (${r.repeatedReports})`],
    ["maintenance sweep errors", String(r.maintenanceErrors)],
    ["seconds", r.seconds.toFixed(1)],
    ["checks", r.failures.length === 0 ? "all passed" : `${r.failures.length} failed`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [
    `| ${"what".padEnd(width)} | value |`,
    `| ${"-".repeat(width)} | ----- |`,
    ...rows.map(([k, v]) => `| ${k.padEnd(width)} | ${v} |`),
  ].join("\n");
}
