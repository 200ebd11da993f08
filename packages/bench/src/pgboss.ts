/**
 * The second peer: pg-boss 12 through its public API (`insert`, `fetch`,
 * `complete`, `flow`, `resolveFlow`), its own schema (`pgboss`) in the same
 * database as ours, one queue (`bench`). pg-boss keeps every finished job as
 * a row (state `completed`), so it is the peer that keeps history;
 * graphile-worker (which deletes) stays the no-history limit.
 *
 * pg-boss 12 declares Node >= 22.12; it runs on Node 20 here (the bench's
 * engines field is what holds).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { type FlowJob, type Job, PgBoss } from "pg-boss";
import { type Cost, startCost, withClient } from "./server.js";

export const BOSS_SCHEMA = "pgboss";
export const BOSS_QUEUE = "bench";

export function bossVersion(): string {
  const main = createRequire(import.meta.url).resolve("pg-boss");
  const pkg = JSON.parse(readFileSync(path.join(path.dirname(main), "..", "package.json"), "utf8"));
  return String(pkg.version);
}

/**
 * An instance without its background work (no maintenance, no cron, no
 * migration at start: the template has the schema), on a pool of `max`.
 * Its errors are collected; the caller fails the run on them.
 */
function openBoss(url: string, max: number, errors: string[], migrate = false): PgBoss {
  const boss = new PgBoss({
    connectionString: url,
    schema: BOSS_SCHEMA,
    supervise: false,
    schedule: false,
    migrate,
    max,
    application_name: "stroem-bench-pgboss",
  });
  boss.on("error", (error) => errors.push(`pg-boss: ${error instanceof Error ? error.message : String(error)}`));
  return boss;
}

async function withBoss<T>(url: string, max: number, fn: (boss: PgBoss) => Promise<T>): Promise<T> {
  const errors: string[] = [];
  const boss = openBoss(url, max, errors);
  await boss.start();
  try {
    const out = await fn(boss);
    if (errors.length > 0) throw new Error(errors.join("; "));
    return out;
  } finally {
    await boss.stop({ graceful: false, close: true });
  }
}

/** Installs pg-boss's schema and the bench's queue in the database at `url` (the template). */
export async function migrateBoss(url: string): Promise<void> {
  const errors: string[] = [];
  const boss = openBoss(url, 2, errors, true);
  await boss.start();
  try {
    await boss.createQueue(BOSS_QUEUE);
  } finally {
    await boss.stop({ graceful: false, close: true });
  }
  if (errors.length > 0) throw new Error(errors.join("; "));
}

/** The partition table pg-boss gave the bench's queue (its statements name it). */
export async function bossTable(url: string): Promise<string> {
  return withClient(url, async (c) => {
    const res = await c.query(`select table_name from ${BOSS_SCHEMA}.queue where name = $1`, [BOSS_QUEUE]);
    if (res.rows.length !== 1) throw new Error(`pg-boss has no queue "${BOSS_QUEUE}"`);
    return String(res.rows[0].table_name);
  });
}

interface Payload {
  i: number;
  /** A diamond's step (a, b, c, d); absent for a one-step job. */
  s?: string;
}

const inserts = (from: number, count: number) => Array.from({ length: count }, (_, k) => ({ data: { i: from + k } }));

/** `insert`s `n` one-step jobs, 1,000 a call (payload `{ i }`, 0 to n-1); not timed. */
export async function seedBoss(url: string, n: number): Promise<void> {
  await withBoss(url, 2, async (boss) => {
    for (let i = 0; i < n; i += 1000) await boss.insert(BOSS_QUEUE, inserts(i, Math.min(1000, n - i)));
  });
}

/** What pg-boss's table holds: jobs by state, and how many were claimed more than once. */
export async function bossCheck(url: string, expected: number): Promise<string[]> {
  return withClient(url, async (c) => {
    const res = await c.query<{ state: string; n: number; retried: number }>(
      `select state::text as state, count(*)::int as n, count(*) filter (where retry_count > 0)::int as retried
       from ${BOSS_SCHEMA}.job where name = $1 group by state`,
      [BOSS_QUEUE],
    );
    const problems: string[] = [];
    const by = new Map(res.rows.map((r) => [r.state, r]));
    const completed = by.get("completed")?.n ?? 0;
    if (completed !== expected) problems.push(`${completed}/${expected} pg-boss jobs completed`);
    const other = res.rows.filter((r) => r.state !== "completed");
    if (other.length > 0)
      problems.push(`pg-boss jobs not completed: ${other.map((r) => `${r.n} ${r.state}`).join(", ")}`);
    const retried = res.rows.reduce((sum, r) => sum + r.retried, 0);
    if (retried > 0) problems.push(`${retried} pg-boss jobs claimed more than once (retry_count > 0)`);
    return problems;
  });
}

export interface BossRun {
  /** Jobs (steps) per second, from the loops' start to the last completion. */
  rate: number;
  cost: Cost;
  problems: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `workers` loops of `fetch(batchSize)` + `complete(jobs)` (the fetched jobs,
 * so each completion is fenced to its attempt) on one instance whose pool
 * has a connection per loop, until `expected` jobs were completed. `during`
 * runs beside the loops until they end (the flow resolver).
 */
async function drain(
  url: string,
  expected: number,
  workers: number,
  batch: number,
  during?: (boss: PgBoss, done: () => boolean) => Promise<void>,
): Promise<{ seconds: number; cost: Cost; seen: Map<string, number>; duplicates: number; completed: number }> {
  return withBoss(url, workers + (during ? 1 : 0), async (boss) => {
    const seen = new Map<string, number>();
    let duplicates = 0;
    let completed = 0;
    let stop = false;
    const done = () => stop || completed >= expected;
    const loop = async () => {
      while (!done()) {
        const jobs = (await boss.fetch(BOSS_QUEUE, { batchSize: batch })) as Job<Payload>[];
        if (jobs.length === 0) {
          await sleep(1);
          continue;
        }
        for (const j of jobs) {
          const key = `${j.data.i}${j.data.s ?? ""}`;
          if (seen.has(key)) duplicates += 1;
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
        const r = (await boss.complete(BOSS_QUEUE, jobs)) as { affected?: number };
        if (r.affected !== jobs.length) throw new Error(`pg-boss completed ${r.affected} of ${jobs.length} jobs`);
        completed += jobs.length;
      }
    };
    const probe = await startCost(url);
    const started = performance.now();
    const runs = [
      ...Array.from({ length: workers }, () =>
        loop().catch((error) => {
          stop = true;
          throw error;
        }),
      ),
      ...(during ? [during(boss, done)] : []),
    ];
    const outcomes = await Promise.allSettled(runs);
    const seconds = (performance.now() - started) / 1000;
    const cost = await probe.stop();
    const failure = outcomes.find((o) => o.status === "rejected");
    if (failure) throw failure.reason;
    return { seconds, cost, seen, duplicates, completed };
  });
}

/** Section 1: `n` one-step jobs (seeded by `insert`, not timed) drained by `workers` loops of fetch + complete. */
export async function bossFlat(url: string, n: number, workers: number, batch: number): Promise<BossRun> {
  await seedBoss(url, n);
  const r = await drain(url, n, workers, batch);
  const problems = await bossCheck(url, n);
  if (r.seen.size !== n) problems.push(`${r.seen.size}/${n} pg-boss jobs fetched`);
  if (r.duplicates > 0) problems.push(`${r.duplicates} pg-boss jobs fetched twice`);
  return { rate: r.completed / r.seconds, cost: r.cost, problems };
}

/** Section 4: `insert` of `perCall` jobs a call until `n`, on one connection. */
export async function bossEnqueue(
  url: string,
  n: number,
  perCall: number,
): Promise<{ rate: number; problems: string[] }> {
  return withBoss(url, 1, async (boss) => {
    await boss.getQueue(BOSS_QUEUE); // connect (and cache the queue) before the clock starts
    const t0 = performance.now();
    for (let i = 0; i < n; i += perCall) await boss.insert(BOSS_QUEUE, inserts(i, Math.min(perCall, n - i)));
    const seconds = (performance.now() - t0) / 1000;
    const count = await withClient(url, async (c) => {
      const res = await c.query(
        `select count(*)::int as n from ${BOSS_SCHEMA}.job where name = $1 and state = 'created'`,
        [BOSS_QUEUE],
      );
      return res.rows[0].n as number;
    });
    return { rate: n / seconds, problems: count === n ? [] : [`${count}/${n} pg-boss jobs inserted`] };
  });
}

/** One diamond a → b, c → d as a pg-boss flow (refs unique within one `flow()` call). */
function diamondFlow(i: number): FlowJob[] {
  const job = (s: string, dependsOn?: string[]): FlowJob => ({
    ref: `${i}${s}`,
    name: BOSS_QUEUE,
    data: { i, s },
    ...(dependsOn ? { dependsOn: dependsOn.map((d) => `${i}${d}`) } : {}),
  });
  return [job("a"), job("b", ["a"]), job("c", ["a"]), job("d", ["b", "c"])];
}

/**
 * Section 2: `diamonds` flows a → b, c → d (seeded 250 diamonds a `flow()`
 * call, not timed), drained like the flat queue while a resolver runs
 * `resolveFlow()` back to back on the same instance: pg-boss unblocks a
 * flow's dependants only there (its background poll runs at most once a
 * second, 5 s by default), so this is its best case. Clock: to the last
 * job's completion. Checks: every job completed once, and no d started
 * before both its parents had completed.
 */
export async function bossDiamonds(url: string, diamonds: number, workers: number, batch: number): Promise<BossRun> {
  await withBoss(url, 2, async (boss) => {
    for (let i = 0; i < diamonds; i += 250) {
      const jobs: FlowJob[] = [];
      for (let k = i; k < Math.min(diamonds, i + 250); k++) jobs.push(...diamondFlow(k));
      await boss.flow(jobs);
    }
  });
  const steps = diamonds * 4;
  let passes = 0;
  const r = await drain(url, steps, workers, batch, async (boss, done) => {
    while (!done()) {
      await boss.resolveFlow();
      passes += 1;
      await sleep(1);
    }
  });
  const problems = await bossCheck(url, steps);
  if (r.seen.size !== steps) problems.push(`${r.seen.size}/${steps} pg-boss flow jobs fetched`);
  if (r.duplicates > 0) problems.push(`${r.duplicates} pg-boss flow jobs fetched twice`);
  const early = await withClient(url, async (c) => {
    const res = await c.query(
      `select count(*)::int as n from ${BOSS_SCHEMA}.job d
       join ${BOSS_SCHEMA}.job p on p.name = d.name and p.data->>'i' = d.data->>'i' and p.data->>'s' in ('b', 'c')
       where d.name = $1 and d.data->>'s' = 'd' and d.started_on < p.completed_on`,
      [BOSS_QUEUE],
    );
    return res.rows[0].n as number;
  });
  if (early > 0) problems.push(`${early} pg-boss joins started before a parent completed`);
  if (passes === 0) problems.push("the flow resolver never ran");
  return { rate: r.completed / r.seconds, cost: r.cost, problems };
}
