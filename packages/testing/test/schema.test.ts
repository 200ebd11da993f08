import { randomUUID } from "node:crypto";
import { CONSTRAINTS, job, jobLive, jobResult, jobStep, stepLive, stepResult, worker } from "@stroem/schema";
import { eq, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { useTestDb } from "../src/fixture.js";

const t = useTestDb();

/** The SQLSTATE and constraint of what `fn` threw (Drizzle wraps the driver error as `cause`). */
async function pgErrorOf(fn: () => Promise<unknown>): Promise<{ code?: string; constraint?: string }> {
  try {
    await fn();
  } catch (error) {
    const e = (error as { cause?: { code?: string; constraint?: string } }).cause ?? (error as { code?: string });
    return { code: e.code, constraint: (e as { constraint?: string }).constraint };
  }
  throw new Error("expected the statement to fail");
}

async function newJob() {
  const jobId = randomUUID();
  await t.db.execute(sql`insert into job (job_id, task_name, source_type) values (${jobId}, 't', 'user')`);
  return jobId;
}

describe("schema constraints", () => {
  it("applies the documented defaults", async () => {
    const workerId = randomUUID();
    await t.db.execute(sql`insert into worker (worker_id, name) values (${workerId}, 'w')`);
    const [w] = await t.db.select().from(worker).where(eq(worker.workerId, workerId));
    expect(w).toMatchObject({ capabilities: ["shell"], status: "active", lastHeartbeat: null });
    expect(w?.registeredAt).toBeInstanceOf(Date);
    const jobId = await newJob();
    const [j] = await t.db.select().from(job).where(eq(job.jobId, jobId));
    expect(j).toMatchObject({ workspace: "default", mode: "distributed", input: null, retryAttempt: 0 });
    await t.db.execute(sql`insert into job_live (job_id) values (${jobId})`);
    const [live] = await t.db.select().from(jobLive).where(eq(jobLive.jobId, jobId));
    expect(live).toMatchObject({ status: "pending", stepsUnfinished: 0, stepsFailed: 0, workerId: null });
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (${jobId}, 's', 'a')`);
    const [s] = await t.db.select().from(jobStep).where(eq(jobStep.jobId, jobId));
    expect(s).toMatchObject({ actionType: "shell", dependsOn: [], continueOnFailure: false, maxRetries: 0 });
    await t.db.execute(
      sql`insert into step_live (job_id, step_name, action_type, route) values (${jobId}, 's', 'shell', 'shell')`,
    );
    const [l] = await t.db.select().from(stepLive).where(eq(stepLive.jobId, jobId));
    expect(l).toMatchObject({ status: "pending", attempts: 0, readyAt: null, propagated: false, retryHistory: [] });
  });

  it.each([
    ["worker_status_check", sql`insert into worker (worker_id, name, status) values (gen_random_uuid(), 'w', 'gone')`],
    [
      "job_mode_check",
      sql`insert into job (job_id, task_name, source_type, mode) values (gen_random_uuid(), 't', 'user', 'remote')`,
    ],
    ["job_live_status_check", sql`insert into job_live (job_id, status) values (gen_random_uuid(), 'done')`],
    ["job_result_status_check", sql`insert into job_result (job_id, status) values (gen_random_uuid(), 'running')`],
    [
      "job_source_type_check",
      sql`insert into job (job_id, task_name, source_type) values (gen_random_uuid(), 't', 'cron')`,
    ],
    [
      "job_step_action_type_check",
      sql`insert into job_step (job_id, step_name, action_name, action_type) values (gen_random_uuid(), 's', 'a', 'vm')`,
    ],
    [
      "step_live_status_check",
      sql`insert into step_live (job_id, step_name, action_type, route, status) values (gen_random_uuid(), 's', 'shell', 'shell', 'waiting')`,
    ],
    [
      "step_live_ready_at_check",
      sql`insert into step_live (job_id, step_name, action_type, route, status) values (gen_random_uuid(), 's', 'shell', 'shell', 'ready')`,
    ],
    [
      "step_live_running_check",
      sql`insert into step_live (job_id, step_name, action_type, route, status, started_at) values (gen_random_uuid(), 's', 'shell', 'shell', 'running', now())`,
    ],
    [
      "step_result_status_check",
      sql`insert into step_result (job_id, step_name, action_type, status) values (gen_random_uuid(), 's', 'shell', 'ready')`,
    ],
  ])("CHECK %s rejects a bad value", async (constraint, statement) => {
    expect(await pgErrorOf(() => t.db.execute(statement))).toEqual({ code: "23514", constraint });
  });

  it("rejects a step of an unknown job, and unknown workers on live jobs and steps", async () => {
    expect(
      await pgErrorOf(() =>
        t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (gen_random_uuid(), 's', 'a')`),
      ),
    ).toEqual({ code: "23503", constraint: CONSTRAINTS.stepJobFk });
    const jobId = await newJob();
    await t.db.execute(sql`insert into job_live (job_id) values (${jobId})`);
    expect(
      await pgErrorOf(() => t.db.update(jobLive).set({ workerId: randomUUID() }).where(eq(jobLive.jobId, jobId))),
    ).toEqual({ code: "23503", constraint: CONSTRAINTS.jobWorkerFk });
    await t.db.execute(
      sql`insert into step_live (job_id, step_name, action_type, route) values (${jobId}, 's', 'shell', 'shell')`,
    );
    expect(
      await pgErrorOf(() => t.db.update(stepLive).set({ workerId: randomUUID() }).where(eq(stepLive.jobId, jobId))),
    ).toEqual({ code: "23503", constraint: CONSTRAINTS.stepWorkerFk });
  });

  it("rejects a duplicate step name in a job (primary key)", async () => {
    const jobId = await newJob();
    const insert = () =>
      t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (${jobId}, 'same', 'a')`);
    await insert();
    expect(await pgErrorOf(insert)).toEqual({ code: "23505", constraint: CONSTRAINTS.stepPk });
  });

  it("deleting a job deletes its steps, live rows and results (cascade and trigger)", async () => {
    const jobId = await newJob();
    const other = await newJob();
    for (const id of [jobId, other]) {
      await t.db.execute(
        sql`insert into job_step (job_id, step_name, action_name) values (${id}, 'a', 'x'), (${id}, 'b', 'x')`,
      );
      await t.db.execute(sql`insert into job_live (job_id) values (${id})`);
      await t.db.execute(
        sql`insert into step_live (job_id, step_name, action_type, route) values (${id}, 'a', 'shell', 'shell')`,
      );
      await t.db.execute(
        sql`insert into step_result (job_id, step_name, action_type, status, completed_at) values (${id}, 'b', 'shell', 'completed', now())`,
      );
    }
    await t.db.delete(job).where(eq(job.jobId, jobId));
    for (const table of [jobStep, jobLive, stepLive, stepResult] as const) {
      expect(await t.db.select().from(table).where(eq(table.jobId, jobId))).toEqual([]);
      expect((await t.db.select().from(table).where(eq(table.jobId, other))).length).toBeGreaterThan(0);
    }
    await t.db.execute(sql`insert into job_result (job_id, status) values (${other}, 'completed')`);
    await t.db.delete(job).where(eq(job.jobId, other));
    expect(await t.db.select().from(jobResult).where(eq(jobResult.jobId, other))).toEqual([]);
  });

  it("a worker holding live jobs or steps cannot be deleted (no silent orphaning)", async () => {
    const workerId = randomUUID();
    await t.db.execute(sql`insert into worker (worker_id, name) values (${workerId}, 'w')`);
    const jobId = await newJob();
    await t.db.execute(sql`insert into job_live (job_id, worker_id) values (${jobId}, ${workerId})`);
    expect((await pgErrorOf(() => t.db.delete(worker).where(eq(worker.workerId, workerId)))).code).toBe("23503");
    await t.db.execute(sql`update job_live set worker_id = null where job_id = ${jobId}`);
    await t.db.execute(
      sql`insert into step_live (job_id, step_name, action_type, route, status, worker_id, started_at) values (${jobId}, 's', 'shell', 'shell', 'running', ${workerId}, now())`,
    );
    expect((await pgErrorOf(() => t.db.delete(worker).where(eq(worker.workerId, workerId)))).code).toBe("23503");
  });
});
