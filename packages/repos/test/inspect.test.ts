import { randomUUID } from "node:crypto";
import type { ActionType } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import {
  type Executor,
  InvalidInputError,
  JobRepo,
  JobStepRepo,
  oldestRunning,
  stuckSteps,
  unmatchedReady,
  WorkerRepo,
} from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.execute(sql`delete from worker`);
});

/** Sets a worker's last heartbeat `secondsAgo` seconds before now (null: never). */
async function heartbeatAgo(workerId: string, secondsAgo: number | null) {
  await t.db.execute(
    secondsAgo === null
      ? sql`update worker set last_heartbeat = null where worker_id = ${workerId}`
      : sql`update worker set last_heartbeat = now() - make_interval(secs => ${secondsAgo}) where worker_id = ${workerId}`,
  );
}

/**
 * A job with one running step per entry, each claimed by its worker
 * `minutesAgo` minutes ago: the step's definition (`job_step`) and its live
 * row (`step_live`), written by hand.
 */
async function running(entries: Array<{ stepName: string; workerId: string; minutesAgo: number; attempts?: number }>) {
  const jobId = await JobRepo.create(t.db, { taskName: "inspect", sourceType: "api" });
  for (const e of entries) {
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name, action_type)
      values (${jobId}, ${e.stepName}, 'run', 'shell')`);
    await t.db.execute(sql`insert into step_live (job_id, step_name, action_type, route, status, worker_id, started_at,
        ready_at, attempts)
      values (${jobId}, ${e.stepName}, 'shell', 'shell', 'running', ${e.workerId}, now() - make_interval(mins => ${e.minutesAgo}),
        now() - make_interval(mins => ${e.minutesAgo}), ${e.attempts ?? 1})`);
  }
  return jobId;
}

/** A job with `n` ready steps of `actionType`, ready `minutesAgo` minutes ago (negative: not due yet). */
async function ready(actionType: ActionType, n: number, minutesAgo: number) {
  const jobId = await JobRepo.create(t.db, { taskName: "inspect", sourceType: "api" });
  await t.db.execute(sql`insert into job_step (job_id, step_name, action_name, action_type)
    select ${jobId}, ${actionType} || g, 'run', ${actionType} from generate_series(1, ${n}) g`);
  await t.db.execute(sql`insert into step_live (job_id, step_name, action_type, route, status, ready_at)
    select ${jobId}, ${actionType} || g, ${actionType}, ${actionType}, 'ready', now() - make_interval(mins => ${minutesAgo})
    from generate_series(1, ${n}) g`);
  return jobId;
}

const MIN = 60_000;

describe("stuckSteps", () => {
  it("returns the running steps of stale and inactive workers, oldest first, with their worker and time running", async () => {
    const alive = await registerWorker(t.db, ["shell"]);
    const stale = await registerWorker(t.db, ["shell"]);
    const never = await registerWorker(t.db, ["shell"]);
    const inactive = await registerWorker(t.db, ["shell"]);
    await heartbeatAgo(stale, 3600);
    await heartbeatAgo(never, null);
    await WorkerRepo.deactivate(t.db, inactive); // a fresh heartbeat, but inactive
    const jobId = await running([
      { stepName: "alive", workerId: alive, minutesAgo: 90 },
      { stepName: "stale-new", workerId: stale, minutesAgo: 5 },
      { stepName: "stale-old", workerId: stale, minutesAgo: 50, attempts: 2 },
      { stepName: "never", workerId: never, minutesAgo: 20 },
      { stepName: "inactive", workerId: inactive, minutesAgo: 30 },
    ]);

    const all = await stuckSteps(t.db, { staleAfterMs: 30_000 });
    expect(all.total).toBe(4);
    expect(all.steps.map((s) => s.stepName)).toEqual(["stale-old", "inactive", "never", "stale-new"]);
    const [first] = all.steps;
    expect(first).toMatchObject({
      jobId,
      stepName: "stale-old",
      actionType: "shell",
      attempt: 2,
      workerId: stale,
      workerName: `w-${stale.slice(0, 8)}`,
      workerStatus: "active",
      cancelRequestedAt: null,
    });
    expect(first?.startedAt).toBeInstanceOf(Date);
    expect(first?.workerLastHeartbeat).toBeInstanceOf(Date);
    expect(Date.now() - (first?.workerLastHeartbeat?.getTime() ?? Date.now())).toBeGreaterThan(3500_000);
    // 50 minutes by the database's clock, give or take the test's own time.
    expect(first?.runningForMs).toBeGreaterThanOrEqual(50 * MIN);
    expect(first?.runningForMs).toBeLessThan(51 * MIN);
    expect(all.steps.find((s) => s.stepName === "never")?.workerLastHeartbeat).toBeNull();
    expect(all.steps.find((s) => s.stepName === "inactive")?.workerStatus).toBe("inactive");

    // `limit` cuts the list, not the total.
    const two = await stuckSteps(t.db, { staleAfterMs: 30_000, limit: 2 });
    expect(two).toMatchObject({ total: 4 });
    expect(two.steps.map((s) => s.stepName)).toEqual(["stale-old", "inactive"]);

    // A longer staleness: the stale worker's hour of silence still counts, 2 hours does not.
    const lenient = await stuckSteps(t.db, { staleAfterMs: 2 * 3600_000 });
    expect(lenient.steps.map((s) => s.stepName)).toEqual(["inactive", "never"]);
  });

  it("is empty when every worker is alive; finished and ready steps of a stale worker are not stuck", async () => {
    const alive = await registerWorker(t.db, ["shell"]);
    await running([{ stepName: "a", workerId: alive, minutesAgo: 1 }]);
    expect(await stuckSteps(t.db, { staleAfterMs: 30_000 })).toEqual({ steps: [], total: 0 });
    // The stale worker's step completes: nothing of it is running any more.
    const gone = await registerWorker(t.db, ["shell"]);
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "x", sourceType: "api" }, [
      { stepName: "a", actionName: "run", actionType: "shell" },
    ]);
    await JobStepRepo.markRunning(t.db, jobId, "a", gone);
    await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: gone, attempt: 1 });
    await heartbeatAgo(gone, 3600);
    expect(await stuckSteps(t.db, { staleAfterMs: 30_000 })).toEqual({ steps: [], total: 0 });
  });

  it("reports a cancel requested on a stuck step", async () => {
    const stale = await registerWorker(t.db, ["shell"]);
    const jobId = await running([{ stepName: "a", workerId: stale, minutesAgo: 3 }]);
    await heartbeatAgo(stale, 600);
    await JobRepo.cancel(t.db, jobId, { reason: "no longer needed" });
    const { steps } = await stuckSteps(t.db, { staleAfterMs: 30_000 });
    expect(steps).toHaveLength(1);
    expect(steps[0]?.cancelRequestedAt).toBeInstanceOf(Date);
  });
});

describe("oldestRunning", () => {
  it("returns the longest-running steps first, whatever their worker's health, up to limit", async () => {
    const alive = await registerWorker(t.db, ["shell"]);
    const stale = await registerWorker(t.db, ["shell"]);
    await heartbeatAgo(stale, 3600);
    const jobId = await running([
      { stepName: "b", workerId: alive, minutesAgo: 10 },
      { stepName: "a", workerId: stale, minutesAgo: 40 },
      { stepName: "c", workerId: alive, minutesAgo: 1 },
    ]);
    const steps = await oldestRunning(t.db, { limit: 2 });
    expect(steps.map((s) => [s.stepName, s.workerId])).toEqual([
      ["a", stale],
      ["b", alive],
    ]);
    expect(steps[0]).toMatchObject({ jobId, attempt: 1, workerStatus: "active" });
    expect(steps[0]?.runningForMs).toBeGreaterThanOrEqual(40 * MIN);
    expect(steps[0]?.runningForMs).toBeLessThan(41 * MIN);
    expect((await oldestRunning(t.db)).map((s) => s.stepName)).toEqual(["a", "b", "c"]);
  });

  it("is empty when nothing runs", async () => {
    await ready("shell", 3, 5);
    expect(await oldestRunning(t.db)).toEqual([]);
  });
});

describe("unmatchedReady", () => {
  it("groups the ready steps of action types no active worker has, with counts, due steps and the oldest", async () => {
    const shell = await registerWorker(t.db, ["shell"]);
    const docker = await registerWorker(t.db, ["docker"]);
    await WorkerRepo.deactivate(t.db, docker); // inactive: takes nothing
    await ready("shell", 4, 30);
    await ready("docker", 2, 30);
    await ready("docker", 1, -10); // a retry not due for 10 minutes
    await ready("pod", 1, 5);
    const rows = await unmatchedReady(t.db);
    expect(rows.map((r) => [r.actionType, r.ready, r.due])).toEqual([
      ["docker", 3, 2],
      ["pod", 1, 1],
    ]);
    const [docker0, pod] = rows;
    expect(docker0?.oldestReadyAt).toBeInstanceOf(Date);
    expect(docker0?.oldestWaitMs).toBeGreaterThanOrEqual(30 * MIN);
    expect(docker0?.oldestWaitMs).toBeLessThan(31 * MIN);
    expect(pod?.oldestWaitMs).toBeGreaterThanOrEqual(5 * MIN);

    // With a staleness bound, an active worker silent longer than it takes nothing either.
    await heartbeatAgo(shell, 120);
    expect((await unmatchedReady(t.db, { staleAfterMs: 60_000 })).map((r) => r.actionType)).toEqual([
      "shell",
      "docker",
      "pod",
    ]);
    expect((await unmatchedReady(t.db, { staleAfterMs: 300_000 })).map((r) => r.actionType)).toEqual(["docker", "pod"]);
    // A worker of every type: nothing is unmatched.
    await registerWorker(t.db, ["shell", "docker", "pod"]);
    expect(await unmatchedReady(t.db, { staleAfterMs: 60_000 })).toEqual([]);
  });

  it("only a step not yet due: its wait is 0", async () => {
    await ready("pod", 1, -5);
    const [row] = await unmatchedReady(t.db);
    expect(row).toMatchObject({ actionType: "pod", ready: 1, due: 0, oldestWaitMs: 0 });
  });

  it("is empty without ready steps, even without workers", async () => {
    expect(await unmatchedReady(t.db)).toEqual([]);
  });
});

describe("bad options are refused before any query", () => {
  it.each([
    [
      "stuckSteps without staleAfterMs",
      (db: Executor) => stuckSteps(db, {} as { staleAfterMs: number }),
      "staleAfterMs",
    ],
    ["stuckSteps with staleAfterMs 0", (db: Executor) => stuckSteps(db, { staleAfterMs: 0 }), "staleAfterMs"],
    ["stuckSteps with limit 0", (db: Executor) => stuckSteps(db, { staleAfterMs: 1000, limit: 0 }), "limit"],
    ["oldestRunning with limit 1001", (db: Executor) => oldestRunning(db, { limit: 1001 }), "limit"],
    ["oldestRunning with limit 2.5", (db: Executor) => oldestRunning(db, { limit: 2.5 }), "limit"],
    ["unmatchedReady with staleAfterMs -1", (db: Executor) => unmatchedReady(db, { staleAfterMs: -1 }), "staleAfterMs"],
  ])("%s", async (_, call, field) => {
    // A pool whose queries would fail: the check must come first.
    const closed = t.openPool();
    await closed.$client.end();
    const error = await errorOf(() => call(closed));
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.message).toContain(field);
  });
});

describe("each read is served by a partial index, not the finished history", () => {
  it("reads step_live through idx_step_live_running_worker and idx_step_live_claim, with no sequential scan", async () => {
    // 30,000 finished steps of 10,000 jobs (definitions and results), set-based.
    const w = randomUUID();
    await WorkerRepo.register(t.db, { workerId: w, name: "history", capabilities: ["shell"] });
    await t.db.execute(sql`insert into job (job_id, task_name, source_type)
      select md5('inspect' || i)::uuid, 'old', 'api' from generate_series(1, 10000) i`);
    await t.db.execute(sql`insert into job_result (job_id, status, started_at, completed_at, steps_unfinished)
      select md5('inspect' || i)::uuid, 'completed', now() - interval '2 days', now() - interval '1 day', 0
      from generate_series(1, 10000) i`);
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name, action_type)
      select j.job_id, 's' || k, 'run', (array['shell', 'docker', 'pod'])[1 + k]
      from job j cross join generate_series(0, 2) k`);
    await t.db.execute(sql`insert into step_result (job_id, step_name, action_type, status, worker_id,
        ready_at, started_at, completed_at, attempts, propagated, job_started_at)
      select r.job_id, 's' || k, (array['shell', 'docker', 'pod'])[1 + k], 'completed', ${w},
        r.started_at, r.started_at, r.completed_at, 1, true, r.started_at
      from job_result r cross join generate_series(0, 2) k`);
    // A live backlog that is neither running nor ready: 2,000 jobs waiting at an
    // approval gate (suspended), each with 9 pending steps after it (20,000
    // live rows). The reads must not walk it either.
    await t.db.execute(sql`insert into job (job_id, task_name, source_type)
      select md5('gated' || i)::uuid, 'gated', 'api' from generate_series(1, 2000) i`);
    await t.db.execute(sql`insert into job_live (job_id, status, started_at, steps_unfinished)
      select md5('gated' || i)::uuid, 'running', now() - interval '1 hour', 10 from generate_series(1, 2000) i`);
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name, action_type, depends_on, dependants)
      select md5('gated' || i)::uuid, 'approve', 'approve', 'approval', '{}',
        array(select 'p' || k from generate_series(1, 9) k order by 1)
      from generate_series(1, 2000) i`);
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name, action_type, depends_on)
      select md5('gated' || i)::uuid, 'p' || k, 'run', 'shell', '{approve}'
      from generate_series(1, 2000) i cross join generate_series(1, 9) k`);
    await t.db.execute(sql`insert into step_live (job_id, step_name, action_type, route, status, ready_at, suspended_at,
        dependants)
      select md5('gated' || i)::uuid, 'approve', 'approval', 'approval', 'suspended', now() - interval '1 hour',
        now() - interval '1 hour', array(select 'p' || k from generate_series(1, 9) k order by 1)
      from generate_series(1, 2000) i`);
    await t.db.execute(sql`insert into step_live (job_id, step_name, action_type, route, status, deps_total, deps_unfinished)
      select md5('gated' || i)::uuid, 'p' || k, 'shell', 'shell', 'pending', 1, 1
      from generate_series(1, 2000) i cross join generate_series(1, 9) k`);
    // Then the few open ones.
    const stale = await registerWorker(t.db, ["shell"]);
    await heartbeatAgo(stale, 3600);
    await running([
      { stepName: "r1", workerId: stale, minutesAgo: 5 },
      { stepName: "r2", workerId: w, minutesAgo: 2 },
    ]);
    await ready("pod", 3, 1);
    await ready("shell", 2, 1);
    await t.db.execute(sql`analyze job_step`);
    await t.db.execute(sql`analyze step_live`);
    await t.db.execute(sql`analyze step_result`);
    await t.db.execute(sql`analyze worker`);

    // This transaction's own counters (pg_stat_xact_*): the scans its statements made.
    await t.db.transaction(async (tx) => {
      const counters = async () => {
        // Sequential scans of the live rows, of the finished history and of the definitions.
        const tables = await tx.execute<{ seq_scan: string }>(
          sql`select coalesce(sum(seq_scan), 0) as seq_scan from pg_stat_xact_user_tables
            where relname in ('step_live', 'step_result', 'job_step')`,
        );
        const indexes = await tx.execute<{ indexrelname: string; idx_scan: string }>(
          sql`select relname as indexrelname, pg_stat_get_xact_numscans(oid) as idx_scan from pg_class
            where relname in ('idx_step_live_running_worker', 'idx_step_live_claim')`,
        );
        return {
          seq: Number(tables.rows[0]?.seq_scan ?? 0),
          idx: Object.fromEntries(indexes.rows.map((r) => [r.indexrelname, Number(r.idx_scan)])),
        };
      };
      const calls: Array<[string, () => Promise<unknown>, string, unknown]> = [
        [
          "stuckSteps",
          async () => (await stuckSteps(tx, { staleAfterMs: 30_000 })).steps.map((s) => s.stepName),
          "idx_step_live_running_worker",
          ["r1"],
        ],
        [
          "oldestRunning",
          async () => (await oldestRunning(tx)).map((s) => s.stepName),
          "idx_step_live_running_worker",
          ["r1", "r2"],
        ],
        [
          "unmatchedReady",
          async () => (await unmatchedReady(tx)).map((r) => [r.actionType, r.ready]),
          "idx_step_live_claim",
          [["pod", 3]], // shell has live workers; docker has no ready steps
        ],
      ];
      for (const [name, call, index, expected] of calls) {
        const before = await counters();
        expect(await call(), name).toEqual(expected);
        const after = await counters();
        expect(after.seq - before.seq, `${name}: sequential scans of step_live, step_result, job_step`).toBe(0);
        expect((after.idx[index] ?? 0) - (before.idx[index] ?? 0), `${name}: scans of ${index}`).toBeGreaterThan(0);
      }
    });
  });
});
