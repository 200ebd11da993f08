/**
 * `pnpm bench`: ours and graphile-worker side by side on one server, in one
 * run. Each pair is measured in the order A B B A (ours, peer, peer, ours)
 * per repetition, every measurement in a fresh database copied from a
 * migrated template; the table shows medians and min–max over measurements.
 * Every run that finishes its jobs is checked for exactly-once execution on
 * both sides; a failed check is reported and fails the run.
 */
import { writeFile } from "node:fs/promises";
import os from "node:os";
import { createPool, runMigrations } from "@stroem/repos";
import { type ClaimFigures, claimComparison } from "./claim.js";
import { type FloorRun, type FloorVariant, floorDrain, MODEL_NAMES, modelSchema } from "./floor.js";
import {
  graphileEnqueue,
  graphileFlat,
  graphileLatency,
  graphileVersion,
  migrateGraphile,
  remainingJobs,
  runnerOptions,
} from "./graphile.js";
import { API_PATHS } from "./ours.js";
import { bossDiamonds, bossEnqueue, bossFlat, bossVersion, migrateBoss } from "./pgboss.js";
import { type LatencyRun, type PurgeSize, p50, p95, purgeLatency, seedPurge } from "./purge.js";
import {
  type LoopReports,
  oursDrain,
  oursDrainRouted,
  oursEnqueue,
  oursFanOut,
  oursLatency,
  oursLoopDrain,
  oursLoopReports,
  oursWideDrain,
} from "./scenarios.js";
import { DIAMOND, FLAT, fanOut } from "./seed.js";
import { modelSemantics } from "./semantics.js";
import {
  type Cost,
  createDatabase,
  dropDatabase,
  openServer,
  type ServerSettings,
  serverSettings,
  withClient,
  withDatabase,
} from "./server.js";
import { fmt, fmtRatio, fmtSummary, median, type Summary, summarize } from "./stats.js";

/** Connections open on the database `name` (other than this one's). */
const backendsOn = (adminUrl: string, name: string) =>
  withClient(adminUrl, async (c) => {
    const res = await c.query("select count(*)::int as n from pg_stat_activity where datname = $1", [name]);
    return res.rows[0].n as number;
  });

export interface BenchOptions {
  /** Small sizes; checks correctness, not speed. */
  quick: boolean;
  /** A server to use (a scratch database is created there and dropped); default an embedded one, fsync on. */
  databaseUrl?: string;
  /** Also write the table here. */
  out?: string;
  /** A B B A rounds per pair. */
  reps: number;
  workers: number;
  flatJobs: number;
  batch: number;
  /** Section 8's batch mode: loops and claim size. */
  floorBatch: { loops: number; size: number };
  dagJobs: number;
  fanOut: number[];
  enqueueJobs: number;
  enqueuePerCall: number;
  latencySamples: number;
  claim: { ready: number; history: number; claims: number };
  /**
   * Section 10 (for_each loops): the loop drained end to end (`instances`,
   * beside as many one-step jobs), and one instance's report timed in loops
   * of `small` and of `large` instances (`sample` reports each).
   */
  loop: { instances: number; small: number; large: number; sample: number };
  /** Run only these sections (their numbers, 1 to 10; 7 runs only with `purge`); default all. */
  only?: number[];
  /** Section 7 (claim and report latency during a purge): off unless `--purge`; `only` runs it alone. */
  purge: PurgeSize & { enabled: boolean; only: boolean };
  /** Progress lines (default: stderr). */
  log: (line: string) => void;
}

export const DEFAULTS: Omit<BenchOptions, "log"> = {
  quick: false,
  reps: 2,
  workers: 8,
  flatJobs: 20_000,
  batch: 50,
  floorBatch: { loops: 2, size: 200 },
  dagJobs: 2_000,
  fanOut: [500, 2_000, 5_000],
  enqueueJobs: 5_000,
  enqueuePerCall: 1_000,
  latencySamples: 50,
  claim: { ready: 100_000, history: 300_000, claims: 1_000 },
  loop: { instances: 1_000, small: 10, large: 10_000, sample: 200 },
  purge: {
    enabled: false,
    only: false,
    finished: 1_000_000,
    ready: 300_000,
    workers: 4,
    paceMs: 10,
    noneSeconds: 30,
    batchSize: 1_000,
    pauseMs: 20, // purgeFinished's default
  },
};

export const QUICK: Omit<BenchOptions, "log"> = {
  ...DEFAULTS,
  quick: true,
  reps: 1,
  flatJobs: 300,
  dagJobs: 60,
  fanOut: [20, 60],
  enqueueJobs: 300,
  enqueuePerCall: 100,
  latencySamples: 5,
  claim: { ready: 2_000, history: 4_000, claims: 100 },
  loop: { instances: 60, small: 10, large: 200, sample: 20 },
  purge: {
    enabled: true,
    only: false,
    finished: 10_000,
    ready: 20_000,
    workers: 2,
    paceMs: 2,
    noneSeconds: 1,
    batchSize: 500,
    pauseMs: 0,
  },
};

export interface BenchResult {
  markdown: string;
  /** Failed correctness checks and errors; empty when every check passed. */
  failures: string[];
}

interface Row {
  section: string;
  measure: string;
  ours: string;
  peer: string;
  ratio: string;
  /** pg-boss's figure and ours / pg-boss, where the section runs it. */
  boss?: string;
  bossRatio?: string;
  note: string;
}

export async function runBench(given: Partial<BenchOptions> = {}): Promise<BenchResult> {
  const o: BenchOptions = {
    ...(given.quick ? QUICK : DEFAULTS),
    log: (line) => process.stderr.write(`${line}\n`),
    ...given,
  };
  const failures: string[] = [];
  const rows: Row[] = [];
  const server = await openServer(o.databaseUrl);
  const prefix = `stroem_bench_${process.pid}_${Date.now().toString(36)}`;
  const template = `${prefix}_tpl`;
  let serial = 0;
  const started = performance.now();
  try {
    const settings = await serverSettings(server.adminUrl);
    await createDatabase(server.adminUrl, template);
    const templateUrl = withDatabase(server.adminUrl, template);
    const db = createPool(templateUrl, { max: 1 });
    try {
      await runMigrations(db);
    } finally {
      await db.$client.end();
    }
    await migrateGraphile(templateUrl);
    await migrateBoss(templateUrl);

    /** Runs `fn` in a fresh copy of the template (or of `from`), dropped afterwards. */
    const fresh = async <T>(fn: (url: string) => Promise<T>, from = template): Promise<T> => {
      const name = `${prefix}_${++serial}`;
      await createDatabase(server.adminUrl, name, from);
      try {
        return await fn(withDatabase(server.adminUrl, name));
      } finally {
        // A scenario's pools may still be closing their connections; a forced
        // drop would terminate them mid-close (seen as an unhandled 57P01 from
        // graphile-worker's pool on busy cores). Let them go first, with a deadline.
        const deadline = Date.now() + 10_000;
        while (Date.now() < deadline && (await backendsOn(server.adminUrl, name)) > 0) {
          await new Promise((r) => setTimeout(r, 20));
        }
        await dropDatabase(server.adminUrl, name);
      }
    };
    /** Records what a check found; the run goes on. */
    const check = (what: string, problems: readonly string[]) => {
      for (const p of problems) failures.push(`${what}: ${p}`);
      if (problems.length > 0) o.log(`  CHECK FAILED ${what}: ${problems.join("; ")}`);
    };
    /**
     * Sides in the order A B C … C B A per repetition (ours first); the
     * summaries by side.
     */
    const alternate = async <K extends string>(label: string, sides: Record<K, () => Promise<number>>) => {
      const keys = Object.keys(sides) as K[];
      const values = new Map<K, number[]>(keys.map((k) => [k, []]));
      for (let r = 0; r < o.reps; r++) {
        for (const k of [...keys, ...[...keys].reverse()]) {
          const v = await sides[k]();
          values.get(k)?.push(v);
          o.log(`  ${label} ${k}: ${fmt(v)}`);
        }
      }
      return Object.fromEntries(keys.map((k) => [k, summarize(values.get(k) ?? [])])) as Record<K, Summary>;
    };
    /** Ours and the peer in the order A B B A per repetition. */
    const abba = async (label: string, ours: () => Promise<number>, peer: () => Promise<number>) => {
      const a: number[] = [];
      const b: number[] = [];
      const step = async (side: "ours" | "peer") => {
        const v = side === "ours" ? await ours() : await peer();
        (side === "ours" ? a : b).push(v);
        o.log(`  ${label} ${side}: ${fmt(v)}`);
      };
      for (let r = 0; r < o.reps; r++) {
        await step("ours");
        await step("peer");
        await step("peer");
        await step("ours");
      }
      return { ours: summarize(a), peer: summarize(b) };
    };
    /** A section that throws is a failure, not the end of the run. */
    const section = async (name: string, fn: () => Promise<void>) => {
      if (o.only && !o.only.includes(Number.parseInt(name, 10))) return;
      o.log(`${name}…`);
      try {
        await fn();
      } catch (error) {
        failures.push(`${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
        o.log(`  ERROR ${name}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    const W = o.workers;
    const flatRate: Record<string, Summary> = {};
    const all = !o.purge.only;

    if (all)
      await section("1. flat queue", async () => {
        const modes = [
          {
            key: "single",
            ours: `claimReadyStep + report`,
            peer: `defaults (concurrency ${W})`,
            batch: 1,
            batched: false,
          },
          {
            key: "batch",
            ours: `claimReadySteps(${o.batch}) + batch report`,
            peer: "localQueue 500 + batched completion",
            batch: o.batch,
            batched: true,
          },
          {
            key: "chain",
            ours: "reportAndClaim (the report and the next claim in one call)",
            peer: `defaults (concurrency ${W})`,
            batch: 1,
            batched: false,
            claimNext: true,
          },
        ];
        const label = { single: "1a", batch: "1b", chain: "1c" } as const;
        for (const m of modes) {
          const shares: number[] = [];
          const costs: { ours: Cost[]; peer: Cost[]; boss: Cost[] } = { ours: [], peer: [], boss: [] };
          const ours = () =>
            fresh(async (url) => {
              const t = await oursDrain(url, o.flatJobs, FLAT, W, m.batch, m.claimNext === true);
              check(`flat ${m.key} (ours)`, t.problems);
              if (t.reportShare !== undefined) shares.push(t.reportShare);
              if (t.cost) costs.ours.push(t.cost);
              return t.rate;
            });
          const peer = () =>
            fresh(async (url) => {
              const g = await graphileFlat(url, o.flatJobs, runnerOptions(W, m.batched));
              const problems: string[] = [];
              if (g.executed !== o.flatJobs) problems.push(`${g.executed}/${o.flatJobs} jobs ran`);
              if (g.duplicates > 0) problems.push(`${g.duplicates} jobs ran twice`);
              if (g.remaining > 0) problems.push(`${g.remaining} jobs left in graphile_worker._private_jobs`);
              check(`flat ${m.key} (graphile-worker)`, problems);
              costs.peer.push(g.cost);
              return o.flatJobs / g.seconds;
            });
          // pg-boss has no report-and-claim call: the chain mode runs ours and graphile-worker only.
          const boss = () =>
            fresh(async (url) => {
              const b = await bossFlat(url, o.flatJobs, W, m.batch);
              check(`flat ${m.key} (pg-boss)`, b.problems);
              costs.boss.push(b.cost);
              return b.rate;
            });
          const r =
            m.key === "chain"
              ? { ...(await alternate(`flat ${m.key}`, { ours, peer })), boss: undefined }
              : await alternate(`flat ${m.key}`, { ours, peer, boss });
          flatRate[m.key] = r.ours;
          rows.push({
            section: `${label[m.key as keyof typeof label]}. Flat queue, ${fmt(o.flatJobs)} one-step jobs`,
            measure: "jobs/s",
            ours: `${fmtSummary(r.ours)} — ${m.ours}`,
            peer: `${fmtSummary(r.peer)} — ${m.peer}`,
            ratio: fmtRatio(r.ours.median, r.peer.median),
            ...(r.boss
              ? {
                  boss: `${fmtSummary(r.boss)} — fetch ${m.batch} + complete(${m.batch === 1 ? "job" : "jobs"})`,
                  bossRatio: fmtRatio(r.ours.median, r.boss.median),
                }
              : {}),
            note: `${W} workers; ours' worker time ${Math.round(100 * median(shares))}% in reports${r.boss ? `; pg-boss: ${W} loops on one instance, pool of ${W}` : ""}`,
          });
          const perJob = (cs: Cost[]) => {
            const each = (f: (c: Cost) => number | undefined) => {
              const v = cs.map(f).filter((x): x is number => x !== undefined);
              return v.length ? fmt(median(v) / o.flatJobs) : "?";
            };
            return `Node ${each((c) => c.nodeCpuMs)} ms + Postgres ${each((c) => c.serverCpuMs)} ms CPU, ${each((c) => c.walBytes / 1024)} KB WAL`;
          };
          rows.push({
            section: `${label[m.key as keyof typeof label]}. Same, cost per job`,
            measure: "CPU ms, WAL KB per job",
            ours: perJob(costs.ours),
            peer: perJob(costs.peer),
            ratio: "–",
            ...(r.boss ? { boss: perJob(costs.boss), bossRatio: "–" } : {}),
            note: "medians; seeding excluded; Postgres CPU = all of the server's processes (local servers only)",
          });
        }
      });

    if (all)
      await section("2. DAG diamonds", async () => {
        for (const [key, batch] of [
          ["single", 1],
          ["batch", o.batch],
        ] as const) {
          const r = await alternate(`diamonds ${key}`, {
            ours: () =>
              fresh(async (url) => {
                const t = await oursDrain(url, o.dagJobs, DIAMOND, W, batch);
                check(`diamonds ${key} (ours)`, t.problems);
                return t.rate;
              }),
            boss: () =>
              fresh(async (url) => {
                const b = await bossDiamonds(url, o.dagJobs, W, batch);
                check(`diamonds ${key} (pg-boss)`, b.problems);
                return b.rate;
              }),
          });
          rows.push({
            section: `2. DAG diamonds a→b,c→d, ${fmt(o.dagJobs)} jobs`,
            measure: "steps/s",
            ours: `${fmtSummary(r.ours)} — ${key === "single" ? "single claim" : `batch ${batch}`}; ${fmtRatio(r.ours.median, flatRate[key]?.median)} of ours' flat`,
            peer: "–",
            ratio: "–",
            boss: `${fmtSummary(r.boss)} — flow(), fetch ${batch} + complete, resolveFlow() back to back`,
            bossRatio: fmtRatio(r.ours.median, r.boss.median),
            note: `${W} workers; order ours, pg-boss, pg-boss, ours; pg-boss unblocks a flow's dependants only in its resolver (background poll at most once a second, 5 s by default), here called back to back: its best case`,
          });
        }
      });

    if (all)
      await section("3. fan-out", async () => {
        for (const n of o.fanOut) {
          const f = await fresh((url) => oursFanOut(url, fanOut(n), W));
          check(`fan-out ${n}`, f.problems);
          o.log(`  fan-out ${n}: median ${fmt(f.median)} ms per child report`);
          rows.push({
            section: `3. Fan-out root→${fmt(n)} children→join`,
            measure: "ms per child report",
            ours: `${fmt(f.median)} (IQR ${fmt(f.p25)}–${fmt(f.p75)})`,
            peer: "–",
            ratio: "–",
            note: `${W} single-claim workers; all ${fmt(f.reported)} child reports timed; ${fmt(f.rate)} child reports/s`,
          });
        }
      });

    if (all)
      await section("4. enqueue", async () => {
        const r = await alternate("enqueue", {
          ours: () =>
            fresh(async (url) => {
              const t = await oursEnqueue(url, o.enqueueJobs, o.enqueuePerCall);
              check("enqueue (ours)", t.problems);
              return t.rate;
            }),
          peer: () =>
            fresh(async (url) => {
              const g = await graphileEnqueue(url, o.enqueueJobs, o.enqueuePerCall);
              const left = await remainingJobs(url);
              check("enqueue (graphile-worker)", left === o.enqueueJobs ? [] : [`${left}/${o.enqueueJobs} jobs added`]);
              return o.enqueueJobs / g.seconds;
            }),
          boss: () =>
            fresh(async (url) => {
              const b = await bossEnqueue(url, o.enqueueJobs, o.enqueuePerCall);
              check("enqueue (pg-boss)", b.problems);
              return b.rate;
            }),
        });
        rows.push({
          section: `4. Enqueue ${fmt(o.enqueueJobs)} one-step jobs, ${fmt(o.enqueuePerCall)} a call`,
          measure: "jobs/s",
          ours: `${fmtSummary(r.ours)} — ${API_PATHS.enqueue}`,
          peer: `${fmtSummary(r.peer)} — addJobs`,
          ratio: fmtRatio(r.ours.median, r.peer.median),
          boss: `${fmtSummary(r.boss)} — insert`,
          bossRatio: fmtRatio(r.ours.median, r.boss.median),
          note: "one connection; order ours, graphile-worker, pg-boss, then back",
        });
      });

    if (all)
      await section("5. pickup latency", async () => {
        const warmUp = 3;
        const r = await abba(
          "latency ms",
          () =>
            fresh(async (url) => {
              const l = await oursLatency(url, o.latencySamples, warmUp);
              check("latency (ours)", l.problems);
              return median(l.ms);
            }),
          () =>
            fresh(async (url) => {
              const ms = await graphileLatency(url, o.latencySamples, warmUp);
              const left = await remainingJobs(url);
              check("latency (graphile-worker)", left === 0 ? [] : [`${left} jobs left`]);
              return median(ms);
            }),
        );
        rows.push({
          section: "5. Pickup latency, idle queue (insert → claim)",
          measure: "ms, median of samples",
          ours: `${fmtSummary(r.ours)} — ${API_PATHS.wakeUp}`,
          peer: `${fmtSummary(r.peer)} — LISTEN/NOTIFY`,
          ratio: fmtRatio(r.ours.median, r.peer.median),
          note: `1 worker each; ${o.latencySamples} samples per measurement; lower is better`,
        });
      });

    if (all)
      await section("6. claim vs the design note's claim", async () => {
        const figures: ClaimFigures = await fresh((url) => claimComparison(url, o.claim, o.reps, o.log));
        const c = o.claim;
        for (const [label, f] of [
          [`${fmt(c.ready)} ready, no history`, figures.empty],
          [`${fmt(c.ready)} ready + ${fmt(c.history)} finished`, figures.history],
        ] as const) {
          rows.push({
            section: `6. Claim, 1 connection, ${label}`,
            measure: "claims/s",
            ours: fmtSummary(f.ours),
            peer: `${fmtSummary(f.naive)} — design note's claim`,
            ratio: fmtRatio(f.ours.median, f.naive.median),
            note: `${fmt(c.claims)} claims a measurement; batch of ${o.batch}: ${fmt(f.batch)} steps/s`,
          });
        }
      });

    if (all)
      await section("9. routing", async () => {
        // Ours against ours: the flat queue alone, then the same beside as many
        // older ready steps that the workers may not take (another route).
        for (const [key, batch] of [
          ["single", 1],
          ["batch", o.batch],
        ] as const) {
          const r = await alternate(`routing ${key}`, {
            flat: () =>
              fresh(async (url) => {
                const t = await oursDrain(url, o.flatJobs, FLAT, W, batch);
                check(`routing ${key} (flat)`, t.problems);
                return t.rate;
              }),
            routed: () =>
              fresh(async (url) => {
                const t = await oursDrainRouted(url, o.flatJobs, o.flatJobs, W, batch);
                check(`routing ${key} (half untakeable)`, t.problems);
                return t.rate;
              }),
          });
          rows.push({
            section: `9. Routing: ${fmt(o.flatJobs)} one-step jobs beside ${fmt(o.flatJobs)} older ready steps the workers may not take`,
            measure: "jobs/s",
            ours: `${fmtSummary(r.routed)} — ${key === "single" ? "claimReadyStep + report" : `claimReadySteps(${batch}) + batch report`}`,
            peer: `${fmtSummary(r.flat)} — the same without them`,
            ratio: fmtRatio(r.routed.median, r.flat.median),
            note: `${W} workers without tags; the other steps require a tag (\`gpu\`): half the ready steps untakeable; order flat, routed, routed, flat`,
          });
        }
      });

    if (all)
      await section("10. for_each loops", async () => {
        // (a) Ours against ours: a loop of N instances drained end to end, N
        // one-step jobs (createMany), and one job of the same N steps declared
        // up front (-> after), under the same workers.
        const n = o.loop.instances;
        for (const [key, batch] of [
          ["single", 1],
          ["batch", o.batch],
        ] as const) {
          const expandMs: number[] = [];
          const endToEnd: number[] = [];
          const r = await alternate(`loop ${key}`, {
            loop: () =>
              fresh(async (url) => {
                const t = await oursLoopDrain(url, n, W, batch);
                check(`loop ${key} (${fmt(n)} instances)`, t.problems);
                expandMs.push(t.expandMs);
                endToEnd.push(n / (n / t.rate + t.expandMs / 1000));
                o.log(`    expandLoop(${fmt(n)}): ${fmt(t.expandMs)} ms`);
                return t.rate;
              }),
            flat: () =>
              fresh(async (url) => {
                const t = await oursDrain(url, n, FLAT, W, batch);
                check(`loop ${key} (flat)`, t.problems);
                return t.rate;
              }),
            wide: () =>
              fresh(async (url) => {
                const t = await oursWideDrain(url, n, W, batch);
                check(`loop ${key} (one job of ${fmt(n)} steps)`, t.problems);
                return t.rate;
              }),
          });
          rows.push({
            section: `10${key === "single" ? "a" : "b"}. for_each loop list→each(${fmt(n)} instances)→after, drained`,
            measure: "instances/s",
            ours: `${fmtSummary(r.loop)} — ${key === "single" ? "claimReadyStep + report" : `claimReadySteps(${batch}) + batch report`}; expandLoop ${fmtSummary(summarize(expandMs))} ms (not in the clock; with it ${fmtSummary(summarize(endToEnd))}/s)`,
            peer: `${fmtSummary(r.flat)} — ${fmt(n)} one-step jobs (createMany), jobs/s`,
            ratio: fmtRatio(r.loop.median, r.flat.median),
            note: `${W} workers; clock from the workers' start to the last instance's report (which completes the loop and makes \`after\` ready); ratio = loop / flat; the same ${fmt(n)} steps declared in one job (→ after): ${fmtSummary(r.wide)} steps/s, loop / that ${fmtRatio(r.loop.median, r.wide.median)}; order loop, flat, one job, one job, flat, loop`,
          });
        }
        // (b) One instance's report in a loop of `small` against one of `large`:
        // one worker, sequential calls, A B B A in fresh databases; as many
        // loops of `small` as make `large` instances (the same table sizes).
        const { small, large, sample } = o.loop;
        const runs = new Map<number, LoopReports[]>([
          [small, []],
          [large, []],
        ]);
        const one = async (size: number) => {
          const t = await fresh((url) => oursLoopReports(url, size, sample, large));
          check(`loop report (${fmt(size)} instances)`, t.problems);
          runs.get(size)?.push(t);
          o.log(
            `  loop report ${fmt(size)}: p50 ${fmt(p50(t.reportMs))} p95 ${fmt(p95(t.reportMs))} ms (${fmt(t.reportMs.length)} reports), last ${fmt(median(t.lastMs))} ms, expandLoop ${fmt(median(t.expandMs))} ms (${t.loops} loop${t.loops === 1 ? "" : "s"})`,
          );
        };
        for (let rep = 0; rep < o.reps; rep++) {
          await one(small);
          await one(large);
          await one(large);
          await one(small);
        }
        const fig = (size: number, pick: (r: LoopReports) => number[], q: (v: number[]) => number) =>
          summarize((runs.get(size) ?? []).map((r) => q(pick(r))));
        const reports = (r: LoopReports) => r.reportMs;
        const med = { small: fig(small, reports, p50), large: fig(large, reports, p50) };
        const tail = { small: fig(small, reports, p95), large: fig(large, reports, p95) };
        const loopsOf = (size: number) => runs.get(size)?.[0]?.loops ?? 0;
        rows.push({
          section: `10c. One loop instance's report (complete), loop of ${fmt(large)} vs ${fmt(small)} instances`,
          measure: "ms, p50 / p95",
          ours: `${fmt(large)} instances: ${fmtSummary(med.large)} / ${fmtSummary(tail.large)}`,
          peer: `${fmt(small)} instances: ${fmtSummary(med.small)} / ${fmtSummary(tail.small)}`,
          ratio: `${fmtRatio(med.large.median, med.small.median)} / ${fmtRatio(tail.large.median, tail.small.median)}`,
          note: `ratio = ${fmt(large)} / ${fmt(small)} (goal 1x); 1 worker, sequential; ${fmt(sample)} reports a measurement spread over the instances in claim order, never a loop's last (10d), the others reported untimed by reportMany between them; ${fmt(loopsOf(large))} loop${loopsOf(large) === 1 ? "" : "s"} of ${fmt(large)} against ${fmt(loopsOf(small))} of ${fmt(small)} (as many instances); order ${fmt(small)}, ${fmt(large)}, ${fmt(large)}, ${fmt(small)}`,
        });
        const lastFig = (size: number) => fig(size, (r) => r.lastMs, median);
        rows.push({
          section: `10d. A loop's last instance's report (completes the loop, collects its outputs), ${fmt(large)} vs ${fmt(small)} instances`,
          measure: "ms",
          ours: `${fmt(large)} instances: ${fmtSummary(lastFig(large))}`,
          peer: `${fmt(small)} instances: ${fmtSummary(lastFig(small))}`,
          ratio: fmtRatio(lastFig(large).median, lastFig(small).median),
          note: `ratio = ${fmt(large)} / ${fmt(small)}; the median of a measurement's loops (${fmt(loopsOf(large))} and ${fmt(loopsOf(small))} loops)`,
        });
        const expandFig = (size: number) => fig(size, (r) => r.expandMs, median);
        rows.push({
          section: `10e. expandLoop, ${fmt(large)} vs ${fmt(small)} items`,
          measure: "ms",
          ours: `${fmt(large)} items: ${fmtSummary(expandFig(large))}`,
          peer: `${fmt(small)} items: ${fmtSummary(expandFig(small))}`,
          ratio: fmtRatio(expandFig(large).median, expandFig(small).median),
          note: `${API_PATHS.expandLoop}; ratio = ${fmt(large)} / ${fmt(small)}; ${fmt(n)} items: in 10a and 10b`,
        });
      });

    if (all)
      await section("8. SQL alone", async () => {
        // Semantics first (not timed): each candidate model on a handful of jobs.
        for (const name of MODEL_NAMES) {
          const problems = await fresh((url) => modelSemantics(url, name, modelSchema(name)));
          check(`SQL alone semantics (${name})`, problems);
          o.log(`  SQL alone semantics ${name}: ${problems.length === 0 ? "ok" : problems.join("; ")}`);
        }
        // The rows beside graphile-worker's, in the order measured (then back).
        const models: { variant: Exclude<FloorVariant, "peer" | "ours">; title: string; what: string; note: string }[] =
          [
            {
              variant: "model",
              title: "the floor of our row model",
              what: "the step's live row claimed (the job started); then deleted with its step_result and the job's job_result appended, in one statement",
              note: "a lower bound, not a usable queue: the production write set without the job lock and look-ups before the report",
            },
            {
              variant: "row",
              title: "the step's rows alone",
              what: "the step's live row claimed, then deleted with its step_result appended; no job row written",
              note: "the floor without the job's job_result row: what that row costs, by difference",
            },
            {
              variant: "queue",
              title: "a queue row deleted + a history row",
              what: "a narrow queue row claimed, then deleted with its outcome inserted into an append-only history",
              note: "graphile-worker's shape plus the history a redesign would keep; no job, no DAG, no guard on the attempt",
            },
            {
              variant: "live",
              title: "candidate (a) live: job + job_step HOT-updated, a narrow live table",
              what: "claim: live row leased, job_step and (first claim) job marked running; complete: jobs locked, live row deleted (worker + attempt guard), step completed, dependants counted down and promoted, job settled",
              note: "real semantics (guard, running from the first claim, DAG, retry, cancel, rescue, timeouts); fillfactor 50, keys the only indexes",
            },
            {
              variant: "append",
              title: "candidate (b) append: immutable definitions, live rows, append-only attempts and results",
              what: "claim: live row leased, an attempt row appended, job_run marked running; complete: job_run locked, live row deleted (guard), a result row appended, dependants counted down, job_run settled or deleted with a job_result row appended",
              note: "real semantics; Hatchet v1 / Windmill's split; job_run HOT-updated",
            },
            {
              variant: "lean",
              title: "candidate (c) lean: (b) without what a one-step job does not need",
              what: "claim: live row leased (no other row for a one-step job); complete: live row deleted (guard), one result row appended that carries the attempt and, when it ends the job, the job's outcome",
              note: "real semantics; job_run only for jobs of several steps; history keyed by time-ordered ids",
            },
            {
              variant: "boss",
              title: "pg-boss 12's statements",
              what: `pg-boss ${bossVersion()}'s fetchNextJob and completeJobs (fenced to the attempt) as its fetch and complete build them`,
              note: "keeps every job as a row (updated twice); no DAG work in complete (its resolver does it)",
            },
          ];
        const variants: FloorVariant[] = ["ours", ...models.map((m) => m.variant), "peer"];
        const dagVariants: FloorVariant[] = ["ours", ...MODEL_NAMES];
        const title = (v: FloorVariant) =>
          v === "ours" ? "our statements" : (models.find((m) => m.variant === v)?.title ?? v);
        const hotText = (hot: NonNullable<FloorRun["hot"]>[]) => {
          const by = new Map<string, { updates: number; hot: number }>();
          for (const run of hot)
            for (const h of run) {
              const t = by.get(h.table) ?? { updates: 0, hot: 0 };
              t.updates += h.updates;
              t.hot += h.hot;
              by.set(h.table, t);
            }
          return [...by]
            .map(
              ([t, h]) => `${t} ${h.updates === 0 ? "not updated" : `${Math.round((100 * h.hot) / h.updates)}% HOT`}`,
            )
            .join(", ");
        };
        const flatBy = new Map<string, number>();
        // Batch: few loops with big batches, the shape of graphile-worker's
        // batched mode (one fetch of up to 500 at a time per runner); with 8
        // loops of 50 its statements ran at half their speed here (skipped
        // locks), ours at about the same.
        for (const [key, loops, batch, dag] of [
          ["single", W, 1, false],
          ["batch", o.floorBatch.loops, o.floorBatch.size, false],
          ["single", W, 1, true],
          ["batch", o.floorBatch.loops, o.floorBatch.size, true],
        ] as const) {
          const list = dag ? dagVariants : variants;
          const jobs = dag ? o.dagJobs : o.flatJobs;
          const steps = jobs * (dag ? DIAMOND.length : 1);
          const rates = new Map<FloorVariant, number[]>(list.map((v) => [v, []]));
          const costs = new Map<FloorVariant, Cost[]>(list.map((v) => [v, []]));
          const hot = new Map<FloorVariant, NonNullable<FloorRun["hot"]>[]>(list.map((v) => [v, []]));
          for (let r = 0; r < o.reps; r++) {
            // A B C … C B A; once each in the quick mode (it checks, not times).
            for (const v of o.quick ? list : [...list, ...[...list].reverse()]) {
              const f = await fresh((url) => floorDrain(url, v, jobs, loops, batch, dag ? DIAMOND : FLAT));
              const what = `SQL alone ${dag ? "diamonds " : ""}${key} (${v})`;
              check(what, f.problems);
              rates.get(v)?.push(f.rate);
              costs.get(v)?.push(f.cost);
              if (f.hot) hot.get(v)?.push(f.hot);
              o.log(`  ${what}: ${fmt(f.rate)}`);
            }
          }
          const rate = (v: FloorVariant) => summarize(rates.get(v) ?? []);
          const perJob = (v: FloorVariant) => {
            const cs = costs.get(v) ?? [];
            const cpu = cs.map((c) => c.serverCpuMs).filter((x): x is number => x !== undefined);
            const wal = cs.map((c) => c.walBytes / 1024);
            return `Postgres CPU ${cpu.length ? fmt(median(cpu) / steps) : "?"} ms, WAL ${wal.length ? fmt(median(wal) / steps) : "?"} KB per ${dag ? "step" : "job"}`;
          };
          const label = dag ? (key === "single" ? "8c" : "8d") : key === "single" ? "8a" : "8b";
          const work = key === "single" ? "claim 1 + report" : `claim ${batch} + batch report, ${loops} loops`;
          const order = `order A B … B A (${list.join(", ")})`;
          if (!dag) {
            const peer = rate("peer");
            const peerText = `${fmtSummary(peer)} — graphile-worker's statements (getJobs, completeJobs); ${perJob("peer")}`;
            for (const v of list) if (v !== "peer") flatBy.set(`${key}/${v}`, rate(v).median);
            rows.push({
              section: `${label}. SQL alone, ${fmt(o.flatJobs)} one-step jobs, ${work}`,
              measure: "jobs/s",
              ours: `${fmtSummary(rate("ours"))} — our statements (the claim, ${batch === 1 ? "stroem_finish_step" : "stroem_report_many"}); ${perJob("ours")}`,
              peer: peerText,
              ratio: fmtRatio(rate("ours").median, peer.median),
              boss: `${fmtSummary(rate("boss"))} — its statements; ${perJob("boss")}`,
              bossRatio: fmtRatio(rate("ours").median, rate("boss").median),
              note: `${loops} loops on raw node-postgres, one harness, ${order}`,
            });
            for (const m of models) {
              if (m.variant === "boss") continue;
              const h = hot.get(m.variant) ?? [];
              rows.push({
                section: `${label}. Same, ${m.title}`,
                measure: "jobs/s",
                ours: `${fmtSummary(rate(m.variant))} — ${m.what}; ${perJob(m.variant)}`,
                peer: peerText,
                ratio: fmtRatio(rate(m.variant).median, peer.median),
                boss: `${fmtSummary(rate("boss"))}`,
                bossRatio: fmtRatio(rate(m.variant).median, rate("boss").median),
                note: `${m.note}${h.length ? `; ${hotText(h)}` : ""}`,
              });
            }
          } else {
            for (const v of list) {
              const h = hot.get(v) ?? [];
              rows.push({
                section: `${label}. SQL alone, ${fmt(jobs)} diamonds a→b,c→d, ${work}: ${title(v)}`,
                measure: "steps/s",
                ours: `${fmtSummary(rate(v))}; ${perJob(v)}`,
                peer: "–",
                ratio: `${fmtRatio(rate(v).median, flatBy.get(`${key}/${v}`))} of its flat`,
                note: `the report promotes the dependants in its statement; ${order}${h.length ? `; ${hotText(h)}` : ""}`,
              });
            }
          }
        }
      });

    if (o.purge.enabled || o.purge.only) {
      await section("7. latency during a purge", async () => {
        const size = o.purge;
        const tpl = `${prefix}_purge_tpl`;
        await createDatabase(server.adminUrl, tpl, template);
        try {
          const t0 = performance.now();
          await seedPurge(withDatabase(server.adminUrl, tpl), size);
          o.log(`  seeded ${fmt(size.finished)} finished jobs in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
          const none: LatencyRun[] = [];
          const during: LatencyRun[] = [];
          const one = async (withPurge: boolean) => {
            const r = await fresh((url) => purgeLatency(url, size, withPurge), tpl);
            check(`purge latency (${withPurge ? "purge" : "none"})`, r.problems);
            (withPurge ? during : none).push(r);
            o.log(
              `  ${withPurge ? "purge" : "none "}: claim p50 ${fmt(p50(r.claim))} p95 ${fmt(p95(r.claim))} ms, report p50 ${fmt(p50(r.report))} p95 ${fmt(p95(r.report))} ms, ${fmt(r.claim.length)} calls${r.purge ? `; purge ${fmt(r.purge.jobs)} jobs + ${fmt(r.purge.steps)} steps in ${r.purge.seconds.toFixed(1)} s` : ""}`,
            );
          };
          for (let r = 0; r < o.reps; r++) {
            await one(false);
            await one(true);
            await one(true);
            await one(false);
          }
          const fig = (runs: LatencyRun[], pick: (r: LatencyRun) => number[], q: (v: number[]) => number) =>
            summarize(runs.map((r) => q(pick(r))));
          for (const [op, pick] of [
            ["claim (claimReadyStep)", (r: LatencyRun) => r.claim],
            ["report (complete)", (r: LatencyRun) => r.report],
          ] as const) {
            const med = { none: fig(none, pick, p50), purge: fig(during, pick, p50) };
            const tail = { none: fig(none, pick, p95), purge: fig(during, pick, p95) };
            rows.push({
              section: `7. ${op} latency, ${fmt(size.finished)} finished jobs purged meanwhile`,
              measure: "ms, p50 / p95",
              ours: `during the purge: ${fmtSummary(med.purge)} / ${fmtSummary(tail.purge)}`,
              peer: `no purge: ${fmtSummary(med.none)} / ${fmtSummary(tail.none)}`,
              ratio: `${fmtRatio(med.purge.median, med.none.median)} / ${fmtRatio(tail.purge.median, tail.none.median)}`,
              note: `ratio = during / none (goal 1.5x or less); ${size.workers} workers, each pausing ${size.paceMs} ms between steps`,
            });
          }
          const secs = during.map((r) => r.purge?.seconds ?? Number.NaN);
          rows.push({
            section: `7. The purge itself (purgeFinished, batch ${fmt(size.batchSize)}, pause ${size.pauseMs} ms)`,
            measure: "s, jobs/s",
            ours: `${fmtSummary(summarize(secs))} s — ${fmt(size.finished / median(secs))} jobs (+ as many steps) removed per s`,
            peer: "–",
            ratio: "–",
            note: `while the workers ran; calls measured: ${fmt(median(during.map((r) => r.claim.length)))} during, ${fmt(median(none.map((r) => r.claim.length)))} in ${size.noneSeconds} s without`,
          });
        } finally {
          await dropDatabase(server.adminUrl, tpl).catch(() => undefined);
        }
      });
    }

    const markdown = render(o, settings, server.kind, rows, failures, (performance.now() - started) / 1000);
    if (o.out) await writeFile(o.out, markdown);
    return { markdown, failures };
  } finally {
    await dropDatabase(server.adminUrl, template).catch(() => undefined);
    await server.stop();
  }
}

function render(
  o: BenchOptions,
  s: ServerSettings,
  kind: string,
  rows: readonly Row[],
  failures: readonly string[],
  seconds: number,
): string {
  const cpus = os.cpus();
  const api = API_PATHS;
  const cell = (v: string) => v.replaceAll("|", "\\|");
  const lines = [
    `# stroem-db bench${o.quick ? " (quick: correctness, not speed)" : ""}`,
    "",
    `- Server: PostgreSQL ${s.version}, ${kind}; fsync=${s.fsync}, synchronous_commit=${s.synchronousCommit}, full_page_writes=${s.fullPageWrites}, shared_buffers=${s.sharedBuffers}`,
    `- Machine: ${cpus.length} cores (${cpus[0]?.model.trim() ?? "?"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${process.platform}-${process.arch}`,
    ...(o.purge.only
      ? []
      : [
          `- Workers: ${o.workers}. Ours: ${o.workers} loops in this process, each its own pool of 1 connection. graphile-worker ${graphileVersion()}: one \`run()\` in this process, concurrency ${o.workers}, default pool (10). pg-boss ${bossVersion()} (schema \`pgboss\`, one queue; no supervise, no cron): ${o.workers} loops of \`fetch\` + \`complete\` on one instance, pool of ${o.workers}.`,
          `- Ours measured through: report = ${api.report}; batch report = ${api.batchReport}; report and claim next = ${api.chainReport}; enqueue = ${api.enqueue}; wake-up = ${api.wakeUp}; loop expansion = ${api.expandLoop}.`,
          `- Method: sides in the order A B … B A, ours first (ours, graphile-worker, pg-boss, pg-boss, graphile-worker, ours where all three run; ${o.reps} round${o.reps === 1 ? "" : "s"}); every measurement in a fresh database (CREATE DATABASE … TEMPLATE of a migrated one); median (min–max) over measurements; ratio = ours / peer (for latency, higher is worse). Clocks: ours and pg-boss from the workers' start to the last report (pg-boss's \`complete\`); graphile-worker from its first task to its table being empty.`,
        ]),
    ...(o.purge.enabled || o.purge.only
      ? [
          `- Section 7: every measurement in a copy of one template holding ${fmt(o.purge.finished)} finished one-step jobs (40 days old, set-based INSERT … SELECT generate_series, then VACUUM ANALYZE) and ${fmt(o.purge.ready)} ready ones; CHECKPOINT before each; order none, purge, purge, none (${o.reps} round${o.reps === 1 ? "" : "s"}); p50 and p95 over every call of a measurement (20 warm-up calls per worker dropped), median (min–max) over measurements.`,
        ]
      : []),
    `- Exactly-once checks: ${failures.length === 0 ? "all passed" : `${failures.length} FAILED (below)`}. Total ${seconds.toFixed(0)} s.`,
    "",
    `| Section | Measure | Ours | graphile-worker | Ratio | pg-boss ${bossVersion()} | Ratio to pg-boss | Notes |`,
    "|---|---|---|---|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${[r.section, r.measure, r.ours, r.peer, r.ratio, r.boss ?? "–", r.bossRatio ?? "–", r.note].map(cell).join(" | ")} |`,
    ),
  ];
  if (failures.length > 0) lines.push("", "## Failures", "", ...failures.map((f) => `- ${f.split("\n")[0]}`));
  return `${lines.join("\n")}\n`;
}
