import { randomUUID } from "node:crypto";
import { job, jobStep, worker } from "@stroem/schema";
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

async function newJob(overrides: Record<string, unknown> = {}) {
  const jobId = randomUUID();
  await t.db.execute(sql`insert into job (job_id, task_name, source_type) values (${jobId}, 't', 'user')`);
  if (Object.keys(overrides).length) await t.db.update(job).set(overrides).where(eq(job.jobId, jobId));
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
    expect(j).toMatchObject({ workspace: "default", mode: "distributed", status: "pending", input: null });
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (${jobId}, 's', 'a')`);
    const [s] = await t.db.select().from(jobStep).where(eq(jobStep.jobId, jobId));
    expect(s).toMatchObject({
      actionType: "shell",
      status: "pending",
      dependsOn: [],
      continueOnFailure: false,
      attempts: 0,
      readyAt: null,
    });
  });

  it.each([
    ["worker_status_check", sql`insert into worker (worker_id, name, status) values (gen_random_uuid(), 'w', 'gone')`],
    [
      "job_mode_check",
      sql`insert into job (job_id, task_name, source_type, mode) values (gen_random_uuid(), 't', 'user', 'remote')`,
    ],
    [
      "job_status_check",
      sql`insert into job (job_id, task_name, source_type, status) values (gen_random_uuid(), 't', 'user', 'done')`,
    ],
    [
      "job_source_type_check",
      sql`insert into job (job_id, task_name, source_type) values (gen_random_uuid(), 't', 'cron')`,
    ],
  ])("CHECK %s rejects a bad value", async (constraint, statement) => {
    expect(await pgErrorOf(() => t.db.execute(statement))).toEqual({ code: "23514", constraint });
  });

  it.each([
    ["job_step_action_type_check", sql`'vm'`, sql`'pending'`, sql`null`],
    ["job_step_status_check", sql`'shell'`, sql`'waiting'`, sql`null`],
    ["job_step_ready_at_check", sql`'shell'`, sql`'ready'`, sql`null`],
  ])("CHECK %s rejects a bad step", async (constraint, actionType, status, readyAt) => {
    const jobId = await newJob();
    const statement = sql`insert into job_step (job_id, step_name, action_name, action_type, status, ready_at)
      values (${jobId}, 's', 'a', ${actionType}, ${status}, ${readyAt})`;
    expect(await pgErrorOf(() => t.db.execute(statement))).toEqual({ code: "23514", constraint });
  });

  it("rejects a step of an unknown job, and unknown workers on jobs and steps", async () => {
    expect(
      await pgErrorOf(() =>
        t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (gen_random_uuid(), 's', 'a')`),
      ),
    ).toEqual({ code: "23503", constraint: "job_step_job_id_job_job_id_fk" });
    const jobId = await newJob();
    expect(await pgErrorOf(() => t.db.update(job).set({ workerId: randomUUID() }).where(eq(job.jobId, jobId)))).toEqual(
      {
        code: "23503",
        constraint: "job_worker_id_worker_worker_id_fk",
      },
    );
    await t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (${jobId}, 's', 'a')`);
    expect(
      await pgErrorOf(() => t.db.update(jobStep).set({ workerId: randomUUID() }).where(eq(jobStep.jobId, jobId))),
    ).toEqual({ code: "23503", constraint: "job_step_worker_id_worker_worker_id_fk" });
  });

  it("rejects a duplicate step name in a job (primary key)", async () => {
    const jobId = await newJob();
    const insert = () =>
      t.db.execute(sql`insert into job_step (job_id, step_name, action_name) values (${jobId}, 'same', 'a')`);
    await insert();
    expect(await pgErrorOf(insert)).toEqual({ code: "23505", constraint: "job_step_job_id_step_name_pk" });
  });

  it("deleting a job deletes its steps (cascade)", async () => {
    const jobId = await newJob();
    await t.db.execute(
      sql`insert into job_step (job_id, step_name, action_name) values (${jobId}, 'a', 'x'), (${jobId}, 'b', 'x')`,
    );
    await t.db.delete(job).where(eq(job.jobId, jobId));
    const left = await t.db.select().from(jobStep).where(eq(jobStep.jobId, jobId));
    expect(left).toEqual([]);
  });

  it("a worker with jobs or steps cannot be deleted (no silent orphaning)", async () => {
    const workerId = randomUUID();
    await t.db.execute(sql`insert into worker (worker_id, name) values (${workerId}, 'w')`);
    await newJob({ workerId });
    expect((await pgErrorOf(() => t.db.delete(worker).where(eq(worker.workerId, workerId)))).code).toBe("23503");
  });
});
