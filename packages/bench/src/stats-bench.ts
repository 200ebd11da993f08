/**
 * `pnpm bench --stats`: `JobRepo.stats` and `JobRepo.search` at a million
 * finished jobs, and what the alternatives would cost the hot path. Opt-in
 * (not in `pnpm test`, not in `--quick`): seeding alone writes 1,000,000
 * jobs and 5,000,000 steps.
 *
 * 1. Reads: each call through the repos, 1 warm-up then `reps` timed; median
 *    (min–max) ms. The plan of a day's stats for one workspace, EXPLAIN
 *    (ANALYZE, BUFFERS), is printed after the table.
 * 2. Hot path: 8 workers drain one-step jobs (`claimReadyStep` + `complete`),
 *    A B B A, in fresh databases: as migrated (with the search and list
 *    indexes) against the same without its GIN indexes (the job search and
 *    the step error searches of `step_live` and `step_result`), and against a
 *    rollup written when a job finishes (an AFTER INSERT trigger on
 *    `job_result` upserting an hourly row per workspace, task and status
 *    with a duration histogram, the cheapest way to write one in the
 *    finishing transaction).
 */
import { createPool, JobRepo, runMigrations } from "@stroem/repos";
import { statsStatement } from "@stroem/repos/internal";
import { drive } from "./drive.js";
import { type HistoryShape, seedHistory } from "./history.js";
import { FLAT, seedJobs } from "./seed.js";
import {
  createDatabase,
  dropDatabase,
  openServer,
  type ServerSettings,
  serverSettings,
  withClient,
  withDatabase,
} from "./server.js";
import { sql } from "./sql.js";
import { fmt, fmtSummary, summarize } from "./stats.js";

export interface StatsBenchOptions {
  databaseUrl?: string;
  /** Finished jobs in the history (default 1,000,000). */
  jobs: number;
  /** Steps per job (default 5). */
  stepsPerJob: number;
  /** Timed calls per read (default 7). */
  reps: number;
  /** One-step jobs per hot-path measurement (default 4,000). */
  drainJobs: number;
  /** A B B A rounds of the hot-path comparisons (default 2). */
  rounds: number;
  workers: number;
  log: (line: string) => void;
}

export const STATS_DEFAULTS: Omit<StatsBenchOptions, "log"> = {
  jobs: 1_000_000,
  stepsPerJob: 5,
  reps: 7,
  drainJobs: 4000,
  rounds: 2,
  workers: 8,
};

/**
 * An hourly rollup written by a trigger when a job finishes (its `job_result`
 * row is inserted, by the report that ends it): the alternative to
 * query-time aggregation. The job's workspace and task come from its
 * definition, read by key.
 */
const ROLLUP_TRIGGER = `
create table job_stats_hourly (
  workspace text not null, task_name text not null, hour timestamptz not null, status text not null,
  jobs integer not null, duration_ms_sum double precision not null, histogram integer[] not null,
  primary key (workspace, task_name, hour, status));
create function bench_rollup() returns trigger language plpgsql as $$
declare
  d double precision := coalesce(extract(epoch from new.completed_at - new.started_at) * 1000, 0);
  b integer := least(32, greatest(1, floor(log(2, greatest(d, 1)::numeric))::integer + 1));
begin
  insert into job_stats_hourly as r
    select j.workspace, j.task_name, date_trunc('hour', new.completed_at), new.status, 1, d,
           (select array_agg(case when g = b then 1 else 0 end order by g) from generate_series(1, 32) g)
    from job j where j.job_id = new.job_id
  on conflict (workspace, task_name, hour, status) do update
    set jobs = r.jobs + 1, duration_ms_sum = r.duration_ms_sum + d, histogram[b] = r.histogram[b] + 1;
  return null;
end $$;
create trigger bench_rollup after insert on job_result for each row execute function bench_rollup();`;

export interface StatsBenchResult {
  markdown: string;
  failures: string[];
}

export async function runStatsBench(given: Partial<StatsBenchOptions> = {}): Promise<StatsBenchResult> {
  const o: StatsBenchOptions = {
    ...STATS_DEFAULTS,
    log: (line) => process.stderr.write(`${line}\n`),
    ...given,
  };
  const failures: string[] = [];
  const server = await openServer(o.databaseUrl);
  const prefix = `stroem_bench_stats_${process.pid}_${Date.now().toString(36)}`;
  const template = `${prefix}_tpl`;
  const history = `${prefix}_history`;
  const rows: Array<[string, string, string]> = [];
  const started = performance.now();
  let settings: ServerSettings | undefined;
  let plan = "";
  let seedSecs = 0;
  try {
    settings = await serverSettings(server.adminUrl);
    await createDatabase(server.adminUrl, template);
    const templateUrl = withDatabase(server.adminUrl, template);
    const migrator = createPool(templateUrl, { max: 1 });
    try {
      await runMigrations(migrator);
    } finally {
      await migrator.$client.end();
    }

    // 1. Reads at a million jobs.
    await createDatabase(server.adminUrl, history, template);
    const historyUrl = withDatabase(server.adminUrl, history);
    const end = new Date("2026-11-28T00:00:00Z");
    const shape: HistoryShape = { jobs: o.jobs, stepsPerJob: o.stepsPerJob, workspaces: 10, tasks: 20, days: 30, end };
    o.log(`seeding ${fmt(o.jobs)} jobs and ${fmt(o.jobs * o.stepsPerJob)} steps (set-based)…`);
    const s0 = performance.now();
    await withClient(historyUrl, async (c) => {
      await seedHistory(c, shape, (done) => o.log(`  ${fmt(done)} of ${fmt(o.jobs * 2)} (jobs, then their steps)`));
      await c.query("vacuum analyze job, job_result");
      await c.query("vacuum analyze job_step, step_result");
    });
    seedSecs = (performance.now() - s0) / 1000;
    const db = createPool(historyUrl, { max: 2, statementTimeoutMs: 0, applicationName: "stroem-bench-stats" });
    try {
      const time = async (label: string, fn: () => Promise<unknown>) => {
        await fn();
        const ms: number[] = [];
        for (let i = 0; i < o.reps; i++) {
          const t0 = performance.now();
          await fn();
          ms.push(performance.now() - t0);
        }
        const s = summarize(ms);
        rows.push([label, fmtSummary(s), ""]);
        o.log(`  ${label}: ${fmtSummary(s)} ms`);
        return s;
      };
      const day = { from: new Date("2026-11-20T00:00:00Z"), to: new Date("2026-11-21T00:00:00Z") };
      const week = { from: new Date("2026-11-14T00:00:00Z"), to: new Date("2026-11-21T00:00:00Z") };
      const oneDay = await time("stats: one workspace, one day, 1 h buckets", () =>
        JobRepo.stats(db, { workspace: "ws-3", ...day, bucket: "1h" }),
      );
      await time("stats: one workspace and task, one day", () =>
        JobRepo.stats(db, { workspace: "ws-3", taskName: "task-4", ...day, bucket: "1h" }),
      );
      await time("stats: every workspace, one day", () => JobRepo.stats(db, { ...day, bucket: "1h" }));
      await time("stats: one workspace, 7 days, 6 h buckets", () =>
        JobRepo.stats(db, { workspace: "ws-3", ...week, bucket: "6h" }),
      );
      await time("stats: one workspace, 30 days, 1 d buckets", () =>
        JobRepo.stats(db, {
          workspace: "ws-3",
          from: new Date(end.getTime() - 30 * 86_400_000),
          to: end,
          bucket: "1d",
        }),
      );
      const sample = await JobRepo.stats(db, { workspace: "ws-3", ...day, bucket: "1h" });
      rows.push([
        "  (that day of ws-3)",
        `${fmt(sample.total)} jobs, ${fmt(sample.queueWaitMs.count)} steps`,
        `p50 ${fmt(sample.durationMs.p50 ?? Number.NaN)} ms, p99 ${fmt(sample.durationMs.p99 ?? Number.NaN)} ms`,
      ]);
      if (oneDay.median >= 1000) failures.push(`a day's stats for one workspace took ${fmt(oneDay.median)} ms`);

      await time("search: one workspace, first page of 50", () => JobRepo.search(db, { workspace: "ws-3" }));
      let cursor: string | undefined;
      for (let i = 0; i < 19; i++) cursor = (await JobRepo.search(db, { workspace: "ws-3", cursor })).nextCursor;
      await time("search: one workspace, page 20 (its cursor)", () =>
        JobRepo.search(db, { workspace: "ws-3", cursor }),
      );
      await time("search: workspace, task, failed, last week", () =>
        JobRepo.search(db, {
          workspace: "ws-3",
          taskNames: ["task-4"],
          statuses: ["failed"],
          createdFrom: week.from,
          createdTo: week.to,
        }),
      );
      await time("search: failed, every workspace", () => JobRepo.search(db, { statuses: ["failed"] }));
      await time("search: text, one match (a commit hash)", () =>
        JobRepo.search(db, { text: "c4ca4238a0b923820dcc509a6f75849b" }),
      );
      await time("search: text, 1,000 matches (a branch)", () => JobRepo.search(db, { text: "branch-42" }));
      await time("search: text in step errors, 1% of jobs", () => JobRepo.search(db, { text: "segmentation" }));
      await time("search: text and workspace", () => JobRepo.search(db, { text: "oomkilled", workspace: "ws-3" }));
      // A word in every job's input ("branch-N"): the walk down the time index fills the page at once.
      await time("search: text in every job (a common word), one workspace", () =>
        JobRepo.search(db, { text: "branch", workspace: "ws-3" }),
      );
      // A reader allowed 500 (workspace, task) pairs (some of tasks that never ran): each from its own index range.
      const scope = Array.from({ length: 500 }, (_, i) => ({ workspace: `ws-${i % 10}`, taskName: `task-${i % 50}` }));
      await time("search: scoped to 500 (workspace, task) pairs, first page", () => JobRepo.search(db, { scope }));
      await time("search: scoped to 500 pairs, failed", () => JobRepo.search(db, { scope, statuses: ["failed"] }));
      // Text under a scope: a common word walks the newest jobs keeping the allowed pairs'; a rare one asks the text indexes per pair.
      await time("search: scoped to 500 pairs, text in every job (a common word)", () =>
        JobRepo.search(db, { scope, text: "branch" }),
      );
      await time("search: scoped to 500 pairs, text, 1,000 matches (a branch)", () =>
        JobRepo.search(db, { scope, text: "branch-42" }),
      );
      await time("stats: scoped to 500 pairs, one day", () => JobRepo.stats(db, { scope, ...day, bucket: "1h" }));
      await time("countByStatus: scoped to 500 pairs", () => JobRepo.countByStatus(db, { scope }));
      await time("durations: one task, 7 days, with the 10 newest runs", () =>
        JobRepo.durations(db, { workspace: "ws-3", taskName: "task-4", ...week }),
      );

      const explained = await db.execute<{ "QUERY PLAN": string }>(
        sql`explain (analyze, buffers) ${statsStatement({ workspace: "ws-3", ...day, bucketSecs: 3600 })}`,
      );
      plan = explained.rows.map((r) => r["QUERY PLAN"]).join("\n");
    } finally {
      await db.$client.end();
    }
    await dropDatabase(server.adminUrl, history);

    // 2. Hot path: as migrated vs without the GIN indexes, and vs a rollup trigger.
    let serial = 0;
    const drain = async (variant: "as migrated" | "without GIN" | "rollup"): Promise<number> => {
      const name = `${prefix}_${++serial}`;
      await createDatabase(server.adminUrl, name, template);
      const url = withDatabase(server.adminUrl, name);
      try {
        const seedDb = createPool(url, { max: 1, statementTimeoutMs: 0 });
        try {
          if (variant === "without GIN") {
            await seedDb.execute(sql`drop index idx_job_search`);
            await seedDb.execute(sql`drop index idx_step_live_error_search`);
            await seedDb.execute(sql`drop index idx_step_result_error_search`);
          }
          if (variant === "rollup") await seedDb.$client.query(ROLLUP_TRIGGER);
          await seedJobs(seedDb, o.drainJobs, FLAT);
        } finally {
          await seedDb.$client.end();
        }
        const result = await drive({ url, workers: o.workers, batch: 1, expected: o.drainJobs });
        if (result.duplicates > 0) failures.push(`${variant}: ${result.duplicates} steps claimed twice`);
        if (variant === "rollup") {
          const rolled = await withClient(url, (c) =>
            c.query<{ n: string }>("select sum(jobs)::text as n from job_stats_hourly"),
          );
          if (Number(rolled.rows[0]?.n) !== o.drainJobs) failures.push(`rollup counted ${rolled.rows[0]?.n} jobs`);
        }
        return result.reported / result.seconds;
      } finally {
        await dropDatabase(server.adminUrl, name);
      }
    };
    for (const variant of ["without GIN", "rollup"] as const) {
      const a: number[] = [];
      const b: number[] = [];
      for (let r = 0; r < o.rounds; r++) {
        for (const side of ["a", "b", "b", "a"] as const) {
          const v = await drain(side === "a" ? "as migrated" : variant);
          (side === "a" ? a : b).push(v);
          o.log(`  drain ${side === "a" ? "as migrated" : variant}: ${fmt(v)} jobs/s`);
        }
      }
      const sa = summarize(a);
      const sb = summarize(b);
      rows.push([
        `hot path: ${o.workers} workers, ${fmt(o.drainJobs)} one-step jobs, jobs/s`,
        `as migrated ${fmtSummary(sa)}`,
        `${variant === "rollup" ? "with a rollup trigger" : "without the GIN indexes"} ${fmtSummary(sb)} (${(sb.median / sa.median).toFixed(2)}x)`,
      ]);
    }
  } catch (error) {
    failures.push(error instanceof Error ? (error.stack ?? error.message) : String(error));
  } finally {
    await dropDatabase(server.adminUrl, template).catch(() => {});
    await dropDatabase(server.adminUrl, history).catch(() => {});
    await server.stop();
  }
  const total = (performance.now() - started) / 1000;
  const lines = [
    `## pnpm bench --stats`,
    "",
    `- Server: PostgreSQL ${settings?.version ?? "?"}, ${server.kind}; fsync=${settings?.fsync}, synchronous_commit=${settings?.synchronousCommit}, shared_buffers=${settings?.sharedBuffers}`,
    `- History: ${fmt(o.jobs)} finished jobs, ${fmt(o.jobs * o.stepsPerJob)} steps, 10 workspaces, 20 tasks each, 30 days; seeded set-based in ${fmt(seedSecs)} s, then VACUUM ANALYZE`,
    `- Reads: through the repos, 1 warm-up + ${o.reps} timed calls, median (min–max) ms. Total ${fmt(total)} s.`,
    "",
    "| Measure | Figure | Notes |",
    "| --- | --- | --- |",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    "",
    "Plan of a day's stats for one workspace (EXPLAIN (ANALYZE, BUFFERS)):",
    "",
    "```",
    plan,
    "```",
    "",
  ];
  return { markdown: lines.join("\n"), failures };
}
