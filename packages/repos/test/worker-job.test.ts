import { randomUUID } from "node:crypto";
import { jobState } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  InvalidInputError,
  InvalidTransitionError,
  JobNotFoundError,
  JobRepo,
  WorkerNotFoundError,
  WorkerRepo,
} from "../src/index.js";
import { errorOf, newJob, registerWorker } from "./helpers.js";

const t = useTestDb();

describe("WorkerRepo", () => {
  it("registers a worker and advances its heartbeat", async () => {
    const workerId = randomUUID();
    await WorkerRepo.register(t.db, { workerId, name: "worker-1", capabilities: ["shell", "docker"] });
    const registered = await WorkerRepo.get(t.db, workerId);
    expect(registered).toMatchObject({
      workerId,
      name: "worker-1",
      capabilities: ["shell", "docker"],
      status: "active",
    });
    expect(registered?.lastHeartbeat).toBeInstanceOf(Date);
    await WorkerRepo.heartbeat(t.db, workerId);
    const after = await WorkerRepo.get(t.db, workerId);
    expect(after?.lastHeartbeat?.getTime()).toBeGreaterThan(registered?.lastHeartbeat?.getTime() ?? Infinity);
    expect(after?.registeredAt).toEqual(registered?.registeredAt);
  });

  it("re-registering updates name and capabilities and reactivates", async () => {
    const workerId = await registerWorker(t.db, ["shell"]);
    await WorkerRepo.deactivate(t.db, workerId);
    expect((await WorkerRepo.get(t.db, workerId))?.status).toBe("inactive");
    await WorkerRepo.register(t.db, { workerId, name: "renamed", capabilities: ["pod"] });
    expect(await WorkerRepo.get(t.db, workerId)).toMatchObject({
      name: "renamed",
      capabilities: ["pod"],
      status: "active",
    });
    expect((await WorkerRepo.list(t.db)).some((w) => w.workerId === workerId)).toBe(true);
  });

  it("heartbeat of an unknown worker is an error, get is undefined", async () => {
    const id = randomUUID();
    expect(await errorOf(() => WorkerRepo.heartbeat(t.db, id))).toBeInstanceOf(WorkerNotFoundError);
    expect(await WorkerRepo.get(t.db, id)).toBeUndefined();
  });

  it("rejects bad registrations before writing", async () => {
    const workerId = randomUUID();
    for (const bad of [
      { workerId: "not-a-uuid", name: "w", capabilities: ["shell"] },
      { workerId, name: "", capabilities: ["shell"] },
      { workerId, name: "w", capabilities: [] },
      { workerId, name: "w", capabilities: ["shell", "teleport"] },
    ]) {
      expect(await errorOf(() => WorkerRepo.register(t.db, bad))).toBeInstanceOf(InvalidInputError);
    }
    expect(await WorkerRepo.get(t.db, workerId)).toBeUndefined();
  });
});

describe("JobRepo", () => {
  it("creates and gets a job", async () => {
    const jobId = await JobRepo.create(t.db, {
      workspace: "default",
      taskName: "my-task",
      mode: "distributed",
      input: { env: "prod", n: [1, 2] },
      sourceType: "user",
      sourceId: "alice",
    });
    const row = await JobRepo.get(t.db, jobId);
    expect(row).toMatchObject({
      jobId,
      workspace: "default",
      taskName: "my-task",
      mode: "distributed",
      input: { env: "prod", n: [1, 2] },
      output: null,
      status: "pending",
      sourceType: "user",
      sourceId: "alice",
      workerId: null,
      startedAt: null,
      completedAt: null,
      logPath: null,
    });
    expect(row?.createdAt).toBeInstanceOf(Date);
    expect(await JobRepo.get(t.db, randomUUID())).toBeUndefined();
  });

  it("lists with pagination, newest first, and filters", async () => {
    const ws = `ws-${randomUUID()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await newJob(t.db, { workspace: ws, taskName: i % 2 ? "odd" : "even" }));
    await newJob(t.db, { workspace: `${ws}-other` });
    const page1 = await JobRepo.list(t.db, { workspace: ws, limit: 3, offset: 0 });
    const page2 = await JobRepo.list(t.db, { workspace: ws, limit: 3, offset: 3 });
    expect(page1).toHaveLength(3);
    expect(page2).toHaveLength(2);
    const all = [...page1, ...page2].map((j) => j.jobId);
    expect(new Set(all)).toEqual(new Set(ids));
    const times = [...page1, ...page2].map((j) => j.createdAt.getTime());
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    expect((await JobRepo.list(t.db, { workspace: ws, taskName: "odd", limit: 10, offset: 0 })).length).toBe(2);
    await JobRepo.markFailed(t.db, ids[0] as string);
    expect(
      (await JobRepo.list(t.db, { workspace: ws, status: "failed", limit: 10, offset: 0 })).map((j) => j.jobId),
    ).toEqual([ids[0]]);
  });

  it("breaks created_at ties by job id, so pages never overlap or skip", async () => {
    const ws = `ws-${randomUUID()}`;
    await t.db.transaction(async (tx) => {
      // One transaction: every job gets the same now().
      for (let i = 0; i < 7; i++) await newJob(tx, { workspace: ws });
    });
    const seen: string[] = [];
    for (let offset = 0; offset < 7; offset += 2) {
      seen.push(...(await JobRepo.list(t.db, { workspace: ws, limit: 2, offset })).map((j) => j.jobId));
    }
    expect(seen).toHaveLength(7);
    expect(new Set(seen).size).toBe(7);
    expect([...seen].sort().reverse()).toEqual(seen);
  });

  it("validates list paging", async () => {
    for (const bad of [
      { limit: 0, offset: 0 },
      { limit: 1001, offset: 0 },
      { limit: 1.5, offset: 0 },
      { limit: 10, offset: -1 },
    ]) {
      expect(await errorOf(() => JobRepo.list(t.db, bad))).toBeInstanceOf(InvalidInputError);
    }
  });

  it("moves pending -> running -> completed, with timestamps and output", async () => {
    const workerId = await registerWorker(t.db);
    const jobId = await newJob(t.db);
    await JobRepo.markRunning(t.db, jobId, workerId);
    const running = await JobRepo.get(t.db, jobId);
    expect(running).toMatchObject({ status: "running", workerId });
    expect(running?.startedAt).toBeInstanceOf(Date);
    await JobRepo.markCompleted(t.db, jobId, { ok: true });
    const done = await JobRepo.get(t.db, jobId);
    expect(done).toMatchObject({ status: "completed", output: { ok: true } });
    expect(done?.completedAt?.getTime()).toBeGreaterThanOrEqual(done?.startedAt?.getTime() ?? Infinity);
  });

  it("moves pending -> failed", async () => {
    const jobId = await newJob(t.db);
    await JobRepo.markFailed(t.db, jobId);
    const failed = await JobRepo.get(t.db, jobId);
    expect(failed?.status).toBe("failed");
    expect(failed?.completedAt).toBeInstanceOf(Date);
  });

  it("a terminal job never changes again, and the error says why", async () => {
    const jobId = await newJob(t.db);
    await JobRepo.markFailed(t.db, jobId);
    const before = await JobRepo.get(t.db, jobId);
    const workerId = await registerWorker(t.db);
    for (const attempt of [
      () => JobRepo.markFailed(t.db, jobId),
      () => JobRepo.markCompleted(t.db, jobId, { late: true }),
      () => JobRepo.markRunning(t.db, jobId, workerId),
    ]) {
      const error = await errorOf(attempt);
      expect(error).toBeInstanceOf(InvalidTransitionError);
      expect(error).toMatchObject({ entity: "job", jobId, currentStatus: "failed" });
    }
    expect(await JobRepo.get(t.db, jobId)).toEqual(before);
  });

  it("marking an unknown job is a not-found error, never a silent no-op", async () => {
    const id = randomUUID();
    const workerId = await registerWorker(t.db);
    for (const attempt of [
      () => JobRepo.markRunning(t.db, id, workerId),
      () => JobRepo.markCompleted(t.db, id),
      () => JobRepo.markFailed(t.db, id),
      () => JobRepo.setLogPath(t.db, id, "/logs/x"),
      () => JobRepo.advance(t.db, id),
    ]) {
      const error = await errorOf(attempt);
      expect(error).toBeInstanceOf(JobNotFoundError);
      expect((error as JobNotFoundError).jobId).toBe(id);
    }
  });

  it("markRunning with an unregistered worker is WorkerNotFoundError and leaves the job pending", async () => {
    const jobId = await newJob(t.db);
    const error = await errorOf(() => JobRepo.markRunning(t.db, jobId, randomUUID()));
    expect(error).toBeInstanceOf(WorkerNotFoundError);
    expect(error.cause).toBeDefined();
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("pending");
  });

  it("sets the log path", async () => {
    const jobId = await newJob(t.db);
    await JobRepo.setLogPath(t.db, jobId, "/var/log/stroem/1.log");
    expect((await JobRepo.get(t.db, jobId))?.logPath).toBe("/var/log/stroem/1.log");
  });

  it("rejects bad jobs before writing", async () => {
    const [{ n: before } = { n: -1 }] = await t.db.select({ n: sql<number>`count(*)::int` }).from(jobState);
    for (const bad of [
      { taskName: "", sourceType: "user" },
      { taskName: "t", sourceType: "cron" },
      { taskName: "t", sourceType: "user", mode: "remote" },
      { taskName: "t", sourceType: "user", workspace: "" },
      { taskName: "t", sourceType: "user", input: { n: 10n } },
    ]) {
      expect(await errorOf(() => JobRepo.create(t.db, bad as JobRepo.NewJob))).toBeInstanceOf(InvalidInputError);
    }
    const [{ n: after } = { n: -2 }] = await t.db.select({ n: sql<number>`count(*)::int` }).from(jobState);
    expect(after).toBe(before);
    expect(await errorOf(() => JobRepo.get(t.db, "1; drop table job"))).toBeInstanceOf(InvalidInputError);
  });

  it("counts jobs by status", async () => {
    const counts = await JobRepo.countByStatus(t.db);
    const [{ n } = { n: -1 }] = await t.db.select({ n: sql<number>`count(*)::int` }).from(jobState);
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(n);
    const [{ failed } = { failed: -1 }] = await t.db
      .select({ failed: sql<number>`count(*)::int` })
      .from(jobState)
      .where(eq(jobState.status, "failed"));
    expect(counts.failed).toBe(failed);
  });
});
