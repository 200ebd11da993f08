import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { JobRepo, JobStepRepo } from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

/** Postgres' percentile_cont: linear interpolation between the closest ranks. */
function percentileCont(values: number[], p: number): number {
  const v = [...values].sort((a, b) => a - b);
  const rank = p * (v.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return (v[lo] as number) + ((v[hi] as number) - (v[lo] as number)) * (rank - lo);
}

const base = Date.parse("2026-03-01T10:00:00Z");
const at = (secs: number) => new Date(base + secs * 1000).toISOString();
const steps = [
  { stepName: "a", actionName: "x", actionType: "shell" },
  { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
] as const;

/**
 * A job of `workspace`/`taskName` run to `outcome` through the repos, then
 * moved in time: created at `created` s after 10:00, started 5 s later, run
 * for `runSecs`; its steps waited `waits` seconds after becoming ready.
 */
async function finished(
  workspace: string,
  taskName: string,
  outcome: "completed" | "failed" | "cancelled" | "pending",
  created: number,
  runSecs: number,
  waits: [number, number] = [1, 1],
) {
  const jobId = await JobRepo.createWithSteps(t.db, { workspace, taskName, sourceType: "api" }, [...steps]);
  if (outcome === "cancelled") await JobRepo.cancel(t.db, jobId);
  else if (outcome !== "pending") {
    const w = await registerWorker(t.db);
    for (const name of ["a", "b"]) {
      await JobStepRepo.markRunning(t.db, jobId, name, w);
      if (outcome === "failed" && name === "b") await JobStepRepo.fail(t.db, { jobId, stepName: name }, "boom");
      else await JobStepRepo.complete(t.db, { jobId, stepName: name });
    }
  }
  const start = created + 5;
  // The definition's creation time; the times of the run on its state rows: a finished job's
  // result (`job_result`), an unfinished one's live row (`job_live`); likewise its steps'.
  await t.db.execute(sql`update job set created_at = ${at(created)}::timestamptz where job_id = ${jobId}`);
  await t.db.execute(sql`update job_result set
      started_at = case when started_at is null then null else ${at(start)}::timestamptz end,
      completed_at = ${at(start + runSecs)}::timestamptz
    where job_id = ${jobId}`);
  await t.db.execute(sql`update job_live set
      started_at = case when started_at is null then null else ${at(start)}::timestamptz end
    where job_id = ${jobId}`);
  for (const table of ["step_result", "step_live"]) {
    await t.db.execute(sql`update ${sql.identifier(table)} set
        ready_at = ${at(start)}::timestamptz + case step_name when 'a' then interval '0 s' else interval '100 s' end,
        started_at = case when started_at is null then null else ${at(start)}::timestamptz
          + case step_name when 'a' then make_interval(secs => ${waits[0]}) else interval '100 s' + make_interval(secs => ${waits[1]}) end end
      where job_id = ${jobId}`);
  }
  return jobId;
}

const window = { from: new Date(at(0)), to: new Date(at(7200)) };
const durations = [10, 20, 30, 40, 4000];
const waitsMs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((s) => s * 1000);

beforeAll(async () => {
  await finished("m", "deploy", "completed", 0, 10, [1, 2]);
  await finished("m", "deploy", "completed", 600, 20, [3, 4]);
  await finished("m", "deploy", "failed", 3700, 30, [5, 6]);
  await finished("m", "deploy", "completed", 3800, 40, [7, 8]);
  await finished("m", "test", "failed", 4000, 4000, [9, 10]); // finishes after `to`
  await finished("m", "test", "cancelled", 4100, 0);
  await finished("m", "test", "pending", 4200, 0);
  await finished("other", "deploy", "completed", 100, 5000); // another workspace
  await finished("m", "deploy", "completed", 7200, 1); // at `to`: outside
  await finished("m", "deploy", "completed", -1, 1); // before `from`: outside
});

describe("JobRepo.stats", () => {
  it("counts, percentiles, failure rates and buckets over the jobs created in [from, to)", async () => {
    const s = await JobRepo.stats(t.db, { workspace: "m", ...window, bucket: "1h" });
    expect(s).toMatchObject({ ...window, bucketSecs: 3600, total: 7 });
    expect(s.jobs).toEqual({ pending: 1, running: 0, completed: 3, failed: 2, cancelled: 1 });
    const d = durations.map((x) => x * 1000);
    expect(s.durationMs.count).toBe(5);
    expect(s.durationMs.p50).toBeCloseTo(percentileCont(d, 0.5), 3);
    expect(s.durationMs.p95).toBeCloseTo(percentileCont(d, 0.95), 3);
    expect(s.durationMs.p99).toBeCloseTo(percentileCont(d, 0.99), 3);
    // Steps that ran: two per finished job (the cancelled and the pending job's never started).
    expect(s.queueWaitMs.count).toBe(10);
    expect(s.queueWaitMs.p50).toBeCloseTo(percentileCont(waitsMs, 0.5), 3);
    expect(s.queueWaitMs.p95).toBeCloseTo(percentileCont(waitsMs, 0.95), 3);
    expect(s.tasks).toEqual([
      { taskName: "deploy", total: 4, completed: 3, failed: 1, cancelled: 0, failureRate: 0.25 },
      { taskName: "test", total: 3, completed: 0, failed: 1, cancelled: 1, failureRate: 1 },
    ]);
    // Finished per bucket by completed_at: 15 s and 625 s (first hour); 3735, 3845 and the cancel at 4105
    // (second); the failed test job finishes at 8005 s, after `to`.
    expect(s.throughput).toEqual([
      { start: new Date(at(0)), created: 2, finished: 2, failed: 0 },
      { start: new Date(at(3600)), created: 5, finished: 3, failed: 1 },
    ]);
  });

  it("narrows to a task, and spans every workspace without one; a bucket that does not divide the window", async () => {
    const deploy = await JobRepo.stats(t.db, { workspace: "m", taskName: "deploy", ...window, bucket: 3600 });
    expect(deploy.jobs).toMatchObject({ completed: 3, failed: 1 });
    expect(deploy.tasks.map((x) => x.taskName)).toEqual(["deploy"]);
    const all = await JobRepo.stats(t.db, { ...window, bucket: "50m" });
    expect(all.total).toBe(8);
    expect(all.throughput.map((b) => b.start)).toEqual([0, 3000, 6000].map((x) => new Date(at(x))));
    expect(all.throughput.reduce((n, b) => n + b.created, 0)).toBe(8);
    const empty = await JobRepo.stats(t.db, { workspace: "nobody", ...window, bucket: "1d" });
    expect(empty).toMatchObject({
      total: 0,
      durationMs: { count: 0, p50: null, p95: null, p99: null },
      queueWaitMs: { count: 0, p50: null, p95: null },
      tasks: [],
      throughput: [{ start: window.from, created: 0, finished: 0, failed: 0 }],
    });
  });

  it("refuses bad ranges and buckets with typed errors", async () => {
    const refused = (q: unknown) => errorOf(() => JobRepo.stats(t.db, q as JobRepo.JobStatsQuery));
    const { from, to } = window;
    expect(await refused({ from: to, to: from, bucket: "1h" })).toMatchObject({
      name: "InvalidRangeError",
      field: "from",
    });
    expect(await refused({ from, to: from, bucket: "1h" })).toMatchObject({ name: "InvalidRangeError" });
    expect(await refused({ from: new Date("2020-01-01"), to: new Date("2021-06-01"), bucket: "1d" })).toMatchObject({
      name: "InvalidRangeError",
      field: "to",
    });
    expect(await refused({ from, to, bucket: "1s" })).toMatchObject({ name: "InvalidRangeError", field: "bucket" });
    for (const bucket of ["1w", "0s", 0, -5, 1.5, "", "h", undefined]) {
      expect(await refused({ from, to, bucket })).toMatchObject({ name: "InvalidInputError", field: "bucket" });
    }
    expect(await refused({ to, bucket: "1h" })).toMatchObject({ field: "from" });
    expect(await refused({ from: "2026-01-01", to, bucket: "1h" })).toMatchObject({ field: "from" });
    expect(await refused({ from, to: new Date(Number.NaN), bucket: "1h" })).toMatchObject({ field: "to" });
    expect(await refused({ from, to, bucket: "1h", workspace: "" })).toMatchObject({ field: "workspace" });
    expect(await refused({ from, to, bucket: "1h", taskName: 7 })).toMatchObject({ field: "taskName" });
    expect(JobRepo.parseBucket("15m")).toBe(900);
    expect(JobRepo.parseBucket("2d")).toBe(172_800);
  });
});
