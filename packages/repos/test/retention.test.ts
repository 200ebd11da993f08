import type { NewFlowStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { type Executor, InvalidInputError, JobRepo, JobStepRepo, purgeFinished } from "../src/index.js";
import { purgeJobsStatement } from "../src/internal.js";
import { deferred, errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();
const DAY = 86_400_000;

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.transaction(async (tx) => {
    await tx.execute(sql`set local stroem.audit_purge = 'on'`);
    await tx.execute(sql`delete from audit_event`);
  });
});

const newJob = { taskName: "t", sourceType: "api" } as const;
const one: NewFlowStep[] = [{ stepName: "a", actionName: "x", actionType: "shell" }];
const two: NewFlowStep[] = [...one, { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] }];

/**
 * Moves `jobIds` back in time by `days`: their created_at (the definition),
 * and their started_at and completed_at (a finished job's result, an
 * unfinished one's live row).
 */
const age = async (jobIds: string[], days: number) => {
  const ids = sql.param(jobIds);
  await t.db.execute(sql`update job set created_at = created_at - make_interval(days => ${days})
    where job_id = any(${ids}::uuid[])`);
  await t.db.execute(sql`update job_result set started_at = started_at - make_interval(days => ${days}),
      completed_at = completed_at - make_interval(days => ${days})
    where job_id = any(${ids}::uuid[])`);
  await t.db.execute(sql`update job_live set started_at = started_at - make_interval(days => ${days})
    where job_id = any(${ids}::uuid[])`);
};

const rows = async (db: Executor = t.db) =>
  (
    await db.execute<{ jobs: number; steps: number; events: number }>(sql`select
      (select count(*)::int from job) as jobs, (select count(*)::int from job_step) as steps,
      (select count(*)::int from audit_event) as events`)
  ).rows[0];

/** A job in each status; `old` ones finished 40 days ago. */
async function jobsInEveryStatus() {
  const w = await registerWorker(t.db);
  const pending = await JobRepo.createWithSteps(t.db, newJob, [{ ...one[0], actionType: "pod" } as NewFlowStep]);
  const running = await JobRepo.createWithSteps(t.db, newJob, two);
  await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1); // running's a
  const completed = await JobRepo.createWithSteps(t.db, newJob, two);
  await JobStepRepo.complete(t.db, { jobId: completed, stepName: "a" });
  await JobStepRepo.complete(t.db, { jobId: completed, stepName: "b" });
  const failed = await JobRepo.createWithSteps(t.db, newJob, two);
  await JobStepRepo.fail(t.db, { jobId: failed, stepName: "a" }, "boom"); // b skipped
  const cancelled = await JobRepo.createWithSteps(t.db, newJob, two);
  await JobRepo.cancel(t.db, cancelled);
  // Cancelled while its step runs: finished, but its step is still open.
  const cancelledRunning = await JobRepo.createWithSteps(t.db, newJob, [
    { ...one[0], actionType: "docker" } as NewFlowStep,
  ]);
  await JobStepRepo.claimReadySteps(t.db, ["docker"], w, 1);
  await JobRepo.cancel(t.db, cancelledRunning);
  const recent = await JobRepo.createWithSteps(t.db, newJob, one);
  await JobStepRepo.complete(t.db, { jobId: recent, stepName: "a" });
  await age([completed, failed, cancelled, cancelledRunning], 40);
  return { w, pending, running, completed, failed, cancelled, cancelledRunning, recent };
}

describe("purgeFinished", () => {
  it("removes old finished jobs and their steps, never an unfinished job, a recent one, or a job with an open step", async () => {
    const j = await jobsInEveryStatus();
    expect(await rows()).toMatchObject({ jobs: 7, steps: 11 });
    const counts = await purgeFinished(t.db, { olderThan: 30 * DAY, auditOlderThan: new Date(Date.now() - DAY) });
    expect(counts).toMatchObject({ jobs: 3, steps: 6, auditEvents: 0, batches: 2, complete: true });
    const left = await JobRepo.list(t.db, { limit: 100, offset: 0 });
    expect(left.map((x) => x.jobId).sort()).toEqual([j.pending, j.running, j.cancelledRunning, j.recent].sort());
    expect(await rows()).toMatchObject({ jobs: 4, steps: 5 });
    for (const id of [j.pending, j.running, j.cancelledRunning, j.recent]) {
      expect((await JobStepRepo.getStepsForJob(t.db, id)).length).toBeGreaterThan(0);
    }
    // Its step ends: the cancelled job goes on the next run.
    await JobStepRepo.markCancelled(t.db, { jobId: j.cancelledRunning, stepName: "a", workerId: j.w, attempt: 1 });
    expect(await purgeFinished(t.db, { olderThan: 30 * DAY })).toMatchObject({ jobs: 1, steps: 1 });
    // Nothing old left: a no-op.
    expect(await purgeFinished(t.db, { olderThan: 30 * DAY })).toMatchObject({ jobs: 0, steps: 0, batches: 2 });
    // olderThan 0 takes the recent one too, and still no unfinished job.
    expect(await purgeFinished(t.db, { olderThan: 0 })).toMatchObject({ jobs: 1, steps: 1 });
    expect((await JobRepo.list(t.db, { limit: 100, offset: 0 })).map((x) => x.status).sort()).toEqual([
      "pending",
      "running",
    ]);
  });

  it("works in batches (each its own transaction), stops at maxBatches, and removes old audit events", async () => {
    const ids = await JobRepo.createMany(
      t.db,
      Array.from({ length: 25 }, () => ({ job: newJob, steps: one })),
    );
    for (const jobId of ids) await JobStepRepo.complete(t.db, { jobId, stepName: "a" });
    await age(ids, 40);
    await t.db.execute(sql`
      insert into audit_event (occurred_at, actor_type, action, entity_type, entity_id)
      select now() - interval '40 days' - g * interval '1 second', 'system', 'job.created', 'job', 'old-' || g
      from generate_series(1, 12) g`);
    expect(await rows()).toMatchObject({ jobs: 25, steps: 25, events: 37 });

    const first = await purgeFinished(t.db, { olderThan: 30 * DAY, batchSize: 10, maxBatches: 2 });
    expect(first).toMatchObject({ jobs: 20, steps: 20, auditEvents: 12, batches: 4, complete: false });
    const second = await purgeFinished(t.db, { olderThan: 30 * DAY, batchSize: 10 });
    expect(second).toMatchObject({ jobs: 5, steps: 5, auditEvents: 0, batches: 2, complete: true });
    // The 25 job.created events are recent: kept.
    expect(await rows()).toMatchObject({ jobs: 0, steps: 0, events: 25 });
    expect(await purgeFinished(t.db, { olderThan: 30 * DAY, auditOlderThan: 0 })).toMatchObject({ auditEvents: 25 });
  });

  it("skips a job row someone holds instead of waiting for it, and takes it on a later run", async () => {
    const ids = await JobRepo.createMany(
      t.db,
      [0, 1, 2].map(() => ({ job: newJob, steps: one })),
    );
    for (const jobId of ids) await JobStepRepo.complete(t.db, { jobId, stepName: "a" });
    await age(ids, 40);
    const held = ids[1] as string;
    const pool = t.openPool({ max: 1 });
    const locked = deferred();
    const release = deferred();
    const holder = pool
      .transaction(async (tx) => {
        await tx.execute(sql`select 1 from job where job_id = ${held} for no key update`); // someone holds the job row
        locked.resolve();
        await release.promise;
      })
      .finally(() => pool.$client.end());
    try {
      await locked.promise;
      // Would hang (the test's timeout) if it waited for the lock.
      expect(await purgeFinished(t.db, { olderThan: 30 * DAY, batchSize: 10 })).toMatchObject({ jobs: 2, steps: 2 });
      expect((await JobRepo.get(t.db, held))?.status).toBe("completed");
    } finally {
      release.resolve();
      await holder;
    }
    expect(await purgeFinished(t.db, { olderThan: 30 * DAY })).toMatchObject({ jobs: 1, steps: 1 });
  });

  it("refuses bad options, and a transaction, having removed nothing", async () => {
    const [jobId] = await JobRepo.createMany(t.db, [{ job: newJob, steps: one }]);
    await JobStepRepo.complete(t.db, { jobId: jobId as string, stepName: "a" });
    await age([jobId as string], 40);
    const cases: Array<[unknown, string]> = [
      [{ olderThan: -1 }, "olderThan"],
      [{ olderThan: "30d" }, "olderThan"],
      [{ olderThan: new Date("x") }, "olderThan"],
      [{ olderThan: DAY, batchSize: 0 }, "batchSize"],
      [{ olderThan: DAY, batchSize: 10_001 }, "batchSize"],
      [{ olderThan: DAY, maxBatches: 0 }, "maxBatches"],
      [{ olderThan: DAY, auditOlderThan: 1.5 }, "auditOlderThan"],
      [{ olderThan: DAY, pauseMs: -5 }, "pauseMs"],
      [undefined, "options"],
    ];
    for (const [options, field] of cases) {
      const e = await errorOf(() => purgeFinished(t.db, options as never));
      expect(e, JSON.stringify(options)).toBeInstanceOf(InvalidInputError);
      expect((e as InvalidInputError).field).toBe(field);
    }
    const e = await errorOf(() => t.db.transaction((tx) => purgeFinished(tx, { olderThan: DAY })));
    expect(e).toMatchObject({ name: "InvalidInputError", field: "db" });
    expect(await rows()).toMatchObject({ jobs: 1, steps: 1 });
  });

  it("selects its batch through idx_job_created_at, oldest first, without a sort (EXPLAIN)", async () => {
    // 20,000 finished jobs (definitions and results) and 5,000 unfinished ones (definitions and live rows).
    await t.db.execute(sql`
      with j as (
        insert into job (job_id, task_name, source_type, created_at)
        select gen_random_uuid(), 't', 'api', now() - g * interval '1 minute' from generate_series(1, 20000) g
        returning job_id, created_at)
      insert into job_result (job_id, status, completed_at) select j.job_id, 'completed', j.created_at from j`);
    await t.db.execute(sql`
      with j as (
        insert into job (job_id, task_name, source_type) select gen_random_uuid(), 't', 'api' from generate_series(1, 5000)
        returning job_id)
      insert into job_live (job_id) select j.job_id from j`);
    await t.db.execute(sql`analyze job`);
    await t.db.execute(sql`analyze job_result`);
    await t.db.execute(sql`analyze job_live`);
    await t.db.execute(sql`analyze step_live`);
    const plan = (
      await t.db.execute<{ "QUERY PLAN": string }>(
        sql`explain ${purgeJobsStatement(new Date(Date.now() - 86_400_000), 1000)}`,
      )
    ).rows
      .map((r) => r["QUERY PLAN"])
      .join("\n");
    expect(plan).toContain("idx_job_created_at");
    expect(plan).not.toMatch(/Sort Key/);
  });
});
