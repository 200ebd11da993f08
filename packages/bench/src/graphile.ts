/**
 * The peer: graphile-worker 0.18 through its programmatic API (`run`,
 * `makeWorkerUtils`/`addJobs`, `runMigrations`), its own schema
 * (`graphile_worker`) in the same database as ours. Its tasks do nothing but
 * record that they ran, as our workers do.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import {
  type AddJobsJobSpec,
  Logger,
  makeWorkerUtils,
  type RunnerOptions,
  run,
  runMigrations,
  type WorkerUtils,
} from "graphile-worker";
import pg from "pg";
import { type Cost, startCost, withClient } from "./server.js";

/**
 * graphile-worker runs on pools this module makes and ends itself: its own
 * pools can still be closing when a measurement's database is dropped
 * (`WITH (FORCE)`), and the terminated connection's error would then surface
 * as an unhandled error. Ours swallow connection errors and are ended before
 * the database goes.
 */
function ownPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 10 }); // graphile-worker's default size
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

async function withPool<T>(url: string, fn: (pgPool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = ownPool(url);
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

/** Only graphile-worker's errors reach the console. */
const logger = new Logger(() => (level, message) => {
  if (level === "error") console.error(`[graphile-worker] ${message}`);
});

export function graphileVersion(): string {
  const main = createRequire(import.meta.url).resolve("graphile-worker");
  const pkg = JSON.parse(readFileSync(path.join(path.dirname(main), "..", "package.json"), "utf8"));
  return String(pkg.version);
}

export async function migrateGraphile(url: string): Promise<void> {
  await withPool(url, (pgPool) => runMigrations({ pgPool, logger }));
}

/**
 * Settings of the two flat-queue modes. Defaults: one runner, 8 concurrent
 * jobs, its default pool of 10. Batched: the same plus a local queue of 500
 * and batched completion and failure (`completeJobBatchDelay: 0` /
 * `failJobBatchDelay: 0`: flush on the next tick), as graphile-worker's own
 * perfTest configures it.
 */
export function runnerOptions(concurrency: number, batched: boolean): RunnerOptions {
  return {
    concurrency,
    noHandleSignals: true,
    logger,
    ...(batched
      ? { preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } }
      : {}),
  };
}

const TASK = "bench";

async function withUtils<T>(url: string, fn: (utils: WorkerUtils) => Promise<T>): Promise<T> {
  return withPool(url, async (pgPool) => {
    const utils = await makeWorkerUtils({ pgPool, logger });
    try {
      return await fn(utils);
    } finally {
      await utils.release();
    }
  });
}

function specs(from: number, count: number): AddJobsJobSpec[] {
  return Array.from({ length: count }, (_, k) => ({ identifier: TASK, payload: { i: from + k } }));
}

/** Jobs still in graphile-worker's table (a finished job is deleted). */
export async function remainingJobs(url: string): Promise<number> {
  return withClient(url, async (c) => {
    const res = await c.query("select count(*)::int as n from graphile_worker._private_jobs");
    return res.rows[0].n as number;
  });
}

/** Enqueues `n` jobs of the bench's task, 1,000 an `addJobs` call (jobs' payload `{ i }`, 0 to n-1). */
export async function seedGraphile(url: string, n: number): Promise<void> {
  await withUtils(url, async (utils) => {
    for (let i = 0; i < n; i += 1000) await utils.addJobs(specs(i, Math.min(1000, n - i)));
  });
}

/** The id graphile-worker gave the bench's task (its `getJobs` filters on it); after `seedGraphile`. */
export async function graphileTaskId(url: string): Promise<number> {
  return withClient(url, async (c) => {
    const res = await c.query("select id from graphile_worker._private_tasks where identifier = $1", [TASK]);
    if (res.rows.length !== 1) throw new Error(`graphile-worker has no task "${TASK}"`);
    return Number(res.rows[0].id);
  });
}

export interface GraphileRun {
  seconds: number;
  /** What running the jobs cost (enqueueing excluded). */
  cost: Cost;
  executed: number;
  duplicates: number;
  remaining: number;
}

/**
 * Enqueues `n` jobs (not timed), starts a runner and times from its first
 * task to the moment its table is empty (batched completions flushed).
 */
export async function graphileFlat(url: string, n: number, options: RunnerOptions): Promise<GraphileRun> {
  await seedGraphile(url, n);
  const probe = await startCost(url);
  const seen = new Set<number>();
  let duplicates = 0;
  let first = 0;
  let allRan!: () => void;
  const ran = new Promise<void>((resolve) => {
    allRan = resolve;
  });
  const pgPool = ownPool(url);
  const runner = await run({
    ...options,
    pgPool,
    taskList: {
      [TASK]: async (payload) => {
        if (seen.size === 0) first = performance.now();
        const i = (payload as { i: number }).i;
        if (seen.has(i)) duplicates += 1;
        seen.add(i);
        if (seen.size >= n) allRan();
      },
    },
  });
  let end = 0;
  try {
    const deadline = Date.now() + 600_000;
    await Promise.race([ran, runner.promise.then(() => Promise.reject(new Error("graphile runner stopped early")))]);
    await withClient(url, async (c) => {
      for (;;) {
        const res = await c.query("select exists (select 1 from graphile_worker._private_jobs) as left");
        if (!res.rows[0].left) break;
        if (Date.now() > deadline) throw new Error("graphile-worker did not empty its queue");
        await new Promise((r) => setTimeout(r, 2));
      }
      end = performance.now();
    });
  } finally {
    await runner.stop();
    await pgPool.end();
  }
  const cost = await probe.stop();
  return { seconds: (end - first) / 1000, cost, executed: seen.size, duplicates, remaining: await remainingJobs(url) };
}

/** `addJobs` of `perCall` jobs a call until `n`; timed on one connection (the utils' pool). */
export async function graphileEnqueue(url: string, n: number, perCall: number): Promise<{ seconds: number }> {
  return withUtils(url, async (utils) => {
    await utils.withPgClient((c) => c.query("select 1")); // connect before the clock starts
    const t0 = performance.now();
    for (let i = 0; i < n; i += perCall) await utils.addJobs(specs(i, Math.min(perCall, n - i)));
    return { seconds: (performance.now() - t0) / 1000 };
  });
}

/**
 * Pickup latency on an idle queue: one runner (concurrency 1, defaults
 * otherwise: it LISTENs for new jobs); for each sample, `addJob` then wait
 * for the task to start. Milliseconds from before `addJob` to the task,
 * after `warmUp` discarded samples, with a random 0 to 100 ms idle gap before each.
 */
export async function graphileLatency(url: string, samples: number, warmUp: number): Promise<number[]> {
  let onRun: (() => void) | undefined;
  const pgPool = ownPool(url);
  const runner = await run({
    ...runnerOptions(1, false),
    pgPool,
    taskList: {
      [TASK]: async () => {
        onRun?.();
      },
    },
  });
  const out: number[] = [];
  try {
    await withUtils(url, async (utils) => {
      for (let i = 0; i < samples + warmUp; i++) {
        await new Promise((r) => setTimeout(r, Math.random() * 100));
        const picked = new Promise<number>((resolve) => {
          onRun = () => resolve(performance.now());
        });
        const t0 = performance.now();
        await utils.addJob(TASK, { i });
        const t1 = await picked;
        if (i >= warmUp) out.push(t1 - t0);
      }
    });
    // The last task has started, not necessarily been recorded as done: let
    // the runner delete its row before stopping it (on busy cores, stopping
    // at once sometimes left it behind and failed the exactly-once check).
    const deadline = Date.now() + 30_000;
    while ((await remainingJobs(url)) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  } finally {
    await runner.stop();
    await pgPool.end();
  }
  return out;
}
