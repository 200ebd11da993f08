import { randomUUID } from "node:crypto";
import { jobStepState } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, type SQL, sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError, JobRepo, JobStepRepo, WorkerNotFoundError } from "../src/index.js";
import { claimStatement } from "../src/internal.js";
import { deferred, errorOf, jobWithReadySteps, newJob, registerWorker, step } from "./helpers.js";

const t = useTestDb();

// Claims are global: every test starts from an empty queue.
beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.execute(sql`delete from worker`);
});

/** Every step row: the ground truth for "claimed exactly once". */
async function stepRows() {
  return t.db.select().from(jobStepState);
}

/**
 * Inserts steps of `jobId` in bulk, by hand: their definitions (`job_step`)
 * and their live rows (`step_live`). `rows` is a SELECT of `step_name`,
 * `action_type`, `status` and `ready_at`.
 */
async function insertLiveSteps(jobId: string, rows: SQL) {
  await t.db.execute(sql`with r as materialized (${rows}), d as (
      insert into job_step (job_id, step_name, action_name, action_type)
      select ${jobId}, r.step_name, 'run', r.action_type from r)
    insert into step_live (job_id, step_name, action_type, route, status, ready_at)
    select ${jobId}, r.step_name, r.action_type, r.action_type, r.status, r.ready_at from r`);
}

describe("claimReadyStep", () => {
  it("creates steps and a worker claims the ready one; a second claim finds nothing", async () => {
    const jobId = await newJob(t.db);
    await JobStepRepo.createSteps(t.db, [
      step(jobId, "checkout", {
        actionName: "git-clone",
        status: "ready",
        actionSpec: { cmd: "git clone ..." },
      }),
      step(jobId, "build", {
        actionName: "npm-build",
        actionImage: "node:20",
        actionSpec: { cmd: "npm ci && npm run build" },
        dependsOn: ["checkout"],
      }),
    ]);
    const workerId = await registerWorker(t.db, ["shell"]);
    const claimed = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
    expect(claimed).toMatchObject({ jobId, stepName: "checkout", status: "running", workerId, attempts: 1 });
    expect(claimed?.startedAt).toBeInstanceOf(Date);
    expect(claimed?.actionSpec).toEqual({ cmd: "git clone ..." });
    expect(await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId)).toBeUndefined();
    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.map((s) => [s.stepName, s.status, s.dependsOn])).toEqual([
      ["build", "pending", ["checkout"]],
      ["checkout", "running", []],
    ]);
    // The claim started the job.
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("running");
  });

  it("serves the oldest ready step first, then job id and step name", async () => {
    const first = await jobWithReadySteps(t.db, 2);
    const second = await jobWithReadySteps(t.db, 1);
    const workerId = await registerWorker(t.db);
    const order: string[] = [];
    for (;;) {
      const s = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
      if (!s) break;
      order.push(`${s.jobId === first ? "first" : s.jobId === second ? "second" : "?"}/${s.stepName}`);
    }
    expect(order).toEqual(["first/s0000", "first/s0001", "second/s0000"]);
  });

  it("filters by capability: shell-only and docker-only workers each get their own kind", async () => {
    const shellJob = await jobWithReadySteps(t.db, 2, "shell");
    const dockerJob = await jobWithReadySteps(t.db, 2, "docker");
    const shellWorker = await registerWorker(t.db, ["shell"]);
    const dockerWorker = await registerWorker(t.db, ["docker"]);
    const podWorker = await registerWorker(t.db, ["pod"]);
    expect(await JobStepRepo.claimReadyStep(t.db, ["pod"], podWorker)).toBeUndefined();
    const d = await JobStepRepo.claimReadySteps(t.db, ["docker"], dockerWorker, 10);
    const s = await JobStepRepo.claimReadySteps(t.db, ["shell"], shellWorker, 10);
    expect(d.map((x) => [x.jobId, x.actionType])).toEqual([
      [dockerJob, "docker"],
      [dockerJob, "docker"],
    ]);
    expect(s.map((x) => [x.jobId, x.actionType])).toEqual([
      [shellJob, "shell"],
      [shellJob, "shell"],
    ]);
  });

  it("an unregistered worker gets WorkerNotFoundError and claims nothing", async () => {
    await jobWithReadySteps(t.db, 1);
    expect(await errorOf(() => JobStepRepo.claimReadyStep(t.db, ["shell"], randomUUID()))).toBeInstanceOf(
      WorkerNotFoundError,
    );
    expect((await stepRows()).map((r) => [r.status, r.attempts])).toEqual([["ready", 0]]);
  });

  it("an unregistered worker gets the same WorkerNotFoundError on an empty queue: the bug shows before work arrives", async () => {
    const stranger = randomUUID();
    expect(await errorOf(() => JobStepRepo.claimReadyStep(t.db, ["pod"], stranger))).toBeInstanceOf(
      WorkerNotFoundError,
    );
    expect(await errorOf(() => JobStepRepo.claimReadySteps(t.db, ["pod", "docker"], stranger, 10))).toMatchObject({
      name: "WorkerNotFoundError",
      workerId: stranger,
    });
    // A registered worker on the same empty queue: nothing, no error.
    expect(await JobStepRepo.claimReadyStep(t.db, ["pod"], await registerWorker(t.db))).toBeUndefined();
  });

  it("validates capabilities and limit", async () => {
    const workerId = await registerWorker(t.db);
    for (const attempt of [
      () => JobStepRepo.claimReadySteps(t.db, [], workerId, 1),
      () => JobStepRepo.claimReadySteps(t.db, ["shell", "'; --"], workerId, 1),
      () => JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 0),
      () => JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1001),
      () => JobStepRepo.claimReadySteps(t.db, ["shell"], "nope", 1),
    ]) {
      expect(await errorOf(attempt)).toBeInstanceOf(InvalidInputError);
    }
  });

  it("skips a step another worker holds locked instead of waiting for it", async () => {
    await jobWithReadySteps(t.db, 2);
    const a = await registerWorker(t.db);
    const b = await registerWorker(t.db);
    const poolA = t.openPool({ max: 1 });
    const poolB = t.openPool({ max: 1 });
    try {
      const holding = deferred();
      const claimedByA = deferred<string | undefined>();
      // A claims inside a transaction it keeps open: its row stays locked.
      const txA = poolA.transaction(async (tx) => {
        const s = await JobStepRepo.claimReadyStep(tx, ["shell"], a);
        claimedByA.resolve(s?.stepName);
        await holding.promise;
      });
      expect(await claimedByA.promise).toBe("s0000");
      // B is not blocked by A's lock: it gets the next step at once.
      const s = await JobStepRepo.claimReadyStep(poolB, ["shell"], b);
      expect(s?.stepName).toBe("s0001");
      expect(await JobStepRepo.claimReadyStep(poolB, ["shell"], b)).toBeUndefined();
      holding.resolve();
      await txA;
      const rows = await stepRows();
      expect(rows.map((r) => [r.stepName, r.workerId, r.attempts]).sort()).toEqual([
        ["s0000", a, 1],
        ["s0001", b, 1],
      ]);
    } finally {
      await poolA.$client.end();
      await poolB.$client.end();
    }
  });

  it("a rolled-back claim gives the step back", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const workerId = await registerWorker(t.db);
    await expect(
      t.db.transaction(async (tx) => {
        expect(await JobStepRepo.claimReadyStep(tx, ["shell"], workerId)).toBeDefined();
        throw new Error("worker crashed before commit");
      }),
    ).rejects.toThrow("worker crashed");
    expect((await JobStepRepo.getReadySteps(t.db, jobId)).map((s) => s.attempts)).toEqual([0]);
  });
});

describe("concurrent claims", () => {
  it("10 workers, 10 ready steps: each step claimed exactly once", async () => {
    await jobWithReadySteps(t.db, 10);
    const workers = await Promise.all(Array.from({ length: 10 }, () => registerWorker(t.db)));
    const pools = workers.map(() => t.openPool({ max: 1 }));
    try {
      const claimed = await Promise.all(
        workers.map((w, i) => JobStepRepo.claimReadyStep(pools[i] as typeof t.db, ["shell"], w)),
      );
      const names = claimed.map((s) => s?.stepName).filter(Boolean);
      expect(new Set(names).size).toBe(names.length);
      const rows = await stepRows();
      expect(rows.filter((r) => r.status === "running")).toHaveLength(names.length);
      for (const r of rows) expect(r.attempts).toBeLessThanOrEqual(1);
      // Whoever lost a race finds the rest: nothing is left behind.
      for (const [i, w] of workers.entries()) {
        while (await JobStepRepo.claimReadyStep(pools[i] as typeof t.db, ["shell"], w)) {}
      }
      expect((await stepRows()).every((r) => r.status === "running" && r.attempts === 1)).toBe(true);
    } finally {
      await Promise.all(pools.map((p) => p.$client.end()));
    }
  });

  it("32 workers on separate pools race over 2,000 steps: every step claimed exactly once", async () => {
    for (let j = 0; j < 4; j++) await jobWithReadySteps(t.db, 500, j % 2 ? "docker" : "shell");
    const workers = await Promise.all(Array.from({ length: 32 }, () => registerWorker(t.db, ["shell", "docker"])));
    const pools = workers.map(() => t.openPool({ max: 1 }));
    const returned = new Map<string, string>();
    try {
      await Promise.all(
        workers.map(async (w, i) => {
          const db = pools[i] as typeof t.db;
          for (;;) {
            // Mix batch and single claims so both shapes race each other.
            const got =
              i % 2 === 0
                ? await JobStepRepo.claimReadySteps(db, ["shell", "docker"], w, 1 + (i % 7))
                : [await JobStepRepo.claimReadyStep(db, ["shell", "docker"], w)].filter((s) => s !== undefined);
            if (got.length === 0) return;
            for (const s of got) {
              const key = `${s.jobId}/${s.stepName}`;
              expect(returned.has(key), `${key} returned twice`).toBe(false);
              returned.set(key, w);
            }
          }
        }),
      );
    } finally {
      await Promise.all(pools.map((p) => p.$client.end()));
    }
    const rows = await stepRows();
    expect(rows).toHaveLength(2000);
    for (const r of rows) {
      expect(r.status).toBe("running");
      expect(r.attempts).toBe(1);
      // The row names the same worker the claim returned the step to.
      expect(returned.get(`${r.jobId}/${r.stepName}`)).toBe(r.workerId);
    }
    expect(returned.size).toBe(2000);
  });
});

describe("the claim's plan", () => {
  it("uses the partial claim index, without a sort, over a large backlog and a larger history", async () => {
    const jobId = await newJob(t.db);
    // 100,000 finished steps and 20,000 ready ones, written in bulk. (With a
    // few hundred ready rows the planner may as well sort them: that is cheap.)
    // The history is finished steps (their definitions and results); the backlog live rows.
    await t.db.execute(sql`
      insert into job_step (job_id, step_name, action_name)
      select ${jobId}, 'done-' || g, 'run' from generate_series(1, 100000) g`);
    await t.db.execute(sql`
      insert into step_result (job_id, step_name, action_type, status, attempts, completed_at, propagated)
      select ${jobId}, 'done-' || g, 'shell', 'completed', 1, now(), true from generate_series(1, 100000) g`);
    await insertLiveSteps(
      jobId,
      sql`select 'ready-' || g as step_name, 'shell' as action_type, 'ready' as status, now() as ready_at
        from generate_series(1, 20000) g`,
    );
    await t.db.execute(sql`analyze job_step`);
    await t.db.execute(sql`analyze step_live`);
    await t.db.execute(sql`analyze step_result`);
    const workerId = await registerWorker(t.db);
    const plan = await t.db.execute<{ "QUERY PLAN": string }>(sql`explain ${claimStatement(["shell"], workerId, 10)}`);
    const text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
    const lockRows = text.slice(text.indexOf("CTE next"), text.indexOf("CTE claimed"));
    expect(lockRows).toContain("idx_step_live_claim");
    expect(lockRows).not.toMatch(/Sort|Seq Scan/);
    // And it claims them in order.
    const got = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 3);
    expect(got).toHaveLength(3);
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("running");
    const [{ n } = { n: 0 }] = await t.db
      .select({ n: sql<number>`count(*)::int` })
      .from(jobStepState)
      .where(eq(jobStepState.status, "running"));
    expect(n).toBe(3);
  });
});

describe("the claim across action types", () => {
  it("a worker of several types gets the oldest ready steps across them, in order", async () => {
    const jobId = await newJob(t.db);
    await insertLiveSteps(
      jobId,
      sql`select 's' || g as step_name,
          case when g % 3 = 0 then 'docker' when g % 3 = 1 then 'shell' else 'pod' end as action_type,
          'ready' as status, now() - make_interval(secs => 100 - g) as ready_at
        from generate_series(1, 30) g`,
    );
    const workerId = await registerWorker(t.db);
    const got = await JobStepRepo.claimReadySteps(t.db, ["shell", "docker"], workerId, 5);
    expect(got.map((s) => s.stepName)).toEqual(["s1", "s3", "s4", "s6", "s7"]);
    // The surplus the lateral sub-selects locked is still ready for others.
    const rest = await JobStepRepo.claimReadySteps(t.db, ["shell", "docker"], workerId, 1000);
    expect(rest).toHaveLength(20 - 5);
  });

  it("a shell claim does not walk past older ready steps of other types, nor past steps not due yet", async () => {
    const jobId = await newJob(t.db);
    await insertLiveSteps(
      jobId,
      sql`select 'd' || g as step_name, 'docker' as action_type, 'ready' as status,
          now() - interval '1 hour' as ready_at
        from generate_series(1, 20000) g`,
    );
    await insertLiveSteps(
      jobId,
      sql`select 'later' || g as step_name, 'shell' as action_type, 'ready' as status,
          now() + interval '1 hour' as ready_at
        from generate_series(1, 5000) g`,
    );
    await insertLiveSteps(
      jobId,
      sql`select 'now' as step_name, 'shell' as action_type, 'ready' as status, now() as ready_at`,
    );
    await t.db.execute(sql`analyze job_step`);
    await t.db.execute(sql`analyze step_live`);
    const workerId = await registerWorker(t.db);
    for (const caps of [["shell"], ["shell", "pod"]]) {
      const plan = await t.db.execute<{ "QUERY PLAN": string }>(
        sql`explain (analyze, costs off, timing off) ${claimStatement(caps, workerId, 10)}`,
      );
      const text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
      const next = text.slice(text.indexOf("CTE next"), text.indexOf("CTE claimed"));
      // The claim index is read for the one due shell row only: nothing removed by a filter.
      expect(next).toContain("idx_step_live_claim");
      expect(next).toMatch(/Index Scan using idx_step_live_claim on step_live s \(actual rows=[0-9.]+ loops=\d+\)/);
      expect(next).not.toMatch(/Rows Removed by Filter: [1-9]/);
      expect(next).not.toContain("Seq Scan");
      // EXPLAIN ANALYZE ran the claim: give the step back for the next round.
      await t.db.execute(
        sql`update step_live set status = 'ready', worker_id = null, started_at = null where step_name = 'now'`,
      );
    }
    const got = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10);
    expect(got.map((s) => s.stepName)).toEqual(["now"]);
  });
});
