import { randomUUID } from "node:crypto";
import type { NewFlowStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import {
  ArtifactRepo,
  createPool,
  type Database,
  InvalidInputError,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  purgeFinished,
  TaskStateRepo,
} from "../src/index.js";
import { errorOf } from "./helpers.js";

/**
 * The records Strøm keeps beside its jobs: idempotent creation, artifacts
 * (and the storage keys the purge leaves to delete), task and workspace
 * state. Races run on two pools of their own (separate connections).
 */
const t = useTestDb();
const pools: Database[] = [];
afterAll(async () => {
  await Promise.all(pools.map((p) => p.$client.end()));
});
const otherPool = () => {
  const p = createPool(t.url, { max: 2, pooler: t.pooler });
  pools.push(p);
  return p;
};

const steps: NewFlowStep[] = [
  { stepName: "build", action: "b", actionType: "shell" },
  { stepName: "deploy", action: "d", actionType: "shell", dependsOn: ["build"] },
];

async function count(table: "job" | "job_step" | "audit_event", jobIds?: string[]) {
  const where = jobIds
    ? table === "audit_event"
      ? sql` where entity_id = any(${sql.param(jobIds)}::text[])`
      : sql` where job_id = any(${sql.param(jobIds)}::uuid[])`
    : sql``;
  const { rows } = await t.db.execute<{ n: number }>(sql`select count(*)::int as n from ${sql.raw(table)}${where}`);
  return rows[0]?.n ?? 0;
}

describe("idempotent creation", () => {
  it("a second create with a live key returns the first job and writes nothing", async () => {
    const key = `webhook-${randomUUID()}`;
    const job = { taskName: "deploy", sourceType: "webhook", idempotencyKey: key } as const;
    const first = await JobRepo.createWithSteps(t.db, job, steps);
    const jobsBefore = await count("job");
    const eventsBefore = await count("audit_event");
    const again = await JobRepo.createManyWithResults(t.db, [{ job, steps }]);
    expect(again).toEqual([{ jobId: first, created: false }]);
    expect(await JobRepo.createWithSteps(t.db, job, steps)).toBe(first);
    expect([await count("job"), await count("audit_event")]).toEqual([jobsBefore, eventsBefore]);
    // The key is per workspace: another workspace's job with it is a new job.
    const elsewhere = await JobRepo.createWithSteps(t.db, { ...job, workspace: "other" }, steps);
    expect(elsewhere).not.toBe(first);
  });

  it("within one createMany: a repeated key is one job; keyless jobs are created as usual", async () => {
    const key = `k-${randomUUID()}`;
    const results = await JobRepo.createManyWithResults(t.db, [
      { job: { taskName: "a", sourceType: "api", idempotencyKey: key }, steps },
      { job: { taskName: "b", sourceType: "api" }, steps },
      { job: { taskName: "a", sourceType: "api", idempotencyKey: key }, steps },
    ]);
    expect(results.map((r) => r.created)).toEqual([true, true, false]);
    expect(results[2]?.jobId).toBe(results[0]?.jobId);
    const ids = [...new Set(results.map((r) => r.jobId))];
    expect(await count("job", ids)).toBe(2);
    expect(await count("job_step", ids)).toBe(4);
    expect(await count("audit_event", ids)).toBe(2);
  });

  it("two connections racing with one key create one job, and both get its id", async () => {
    const [a, b] = [otherPool(), otherPool()];
    for (let round = 0; round < 5; round++) {
      const key = `race-${randomUUID()}`;
      const job = { taskName: "race", sourceType: "webhook", idempotencyKey: key } as const;
      // Hold a's create open in a transaction so that b's must wait for it.
      const client = await (a.$client as pg.Pool).connect();
      try {
        await client.query("begin");
        const tx = (await import("drizzle-orm/node-postgres")).drizzle({ client });
        const held = await JobRepo.createWithSteps(tx, job, steps);
        const racing = JobRepo.createManyWithResults(b, [{ job, steps }]);
        // b waits on the key a inserted: its create cannot finish before a's commit.
        const settled = await Promise.race([
          racing.then(() => "done"),
          new Promise((r) => setTimeout(r, 200, "waiting")),
        ]);
        expect(settled).toBe("waiting");
        await client.query("commit");
        expect(await racing).toEqual([{ jobId: held, created: false }]);
        expect(await count("job", [held])).toBe(1);
      } finally {
        client.release();
      }
      const both = await Promise.all([
        JobRepo.createManyWithResults(a, [{ job: { ...job, idempotencyKey: `${key}-2` }, steps }]),
        JobRepo.createManyWithResults(b, [{ job: { ...job, idempotencyKey: `${key}-2` }, steps }]),
      ]);
      expect(both.map((r) => r[0]?.created).sort()).toEqual([false, true]);
      expect(both[0]?.[0]?.jobId).toBe(both[1]?.[0]?.jobId);
    }
  });

  it("an expired key is taken over by the next create; bad keys are refused, writing nothing", async () => {
    const key = `ttl-${randomUUID()}`;
    const job = { taskName: "ttl", sourceType: "api", idempotencyKey: key, idempotencyTtlSecs: 60 } as const;
    const first = await JobRepo.createWithSteps(t.db, job, steps);
    await t.db.execute(sql`update job_idempotency_key set expires_at = now() - interval '1 second' where key = ${key}`);
    const second = await JobRepo.createWithSteps(t.db, job, steps);
    expect(second).not.toBe(first);
    expect(await JobRepo.createWithSteps(t.db, job, steps)).toBe(second);
    const before = await count("job");
    for (const bad of [
      { ...job, idempotencyKey: "" },
      { ...job, idempotencyKey: "x".repeat(513) },
      { ...job, idempotencyTtlSecs: 0 },
      { ...job, idempotencyTtlSecs: 31 * 86_400 },
    ]) {
      expect(await errorOf(() => JobRepo.createWithSteps(t.db, bad, steps))).toBeInstanceOf(InvalidInputError);
    }
    expect(await errorOf(() => JobRepo.create(t.db, job))).toMatchObject({ field: "idempotencyKey" });
    expect(await count("job")).toBe(before);
  });
});

describe("artifacts", () => {
  it("put, replace (returns the key it replaced), get, list with the total, remove", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "a", sourceType: "api" }, steps);
    expect(
      await ArtifactRepo.put(t.db, {
        jobId,
        name: "report.html",
        stepName: "build",
        sizeBytes: 10,
        storageKey: "s3/1",
      }),
    ).toEqual({});
    expect(
      await ArtifactRepo.put(t.db, {
        jobId,
        name: "report.html",
        contentType: "text/html",
        sizeBytes: 12,
        storageKey: "s3/2",
      }),
    ).toEqual({ replacedStorageKey: "s3/1" });
    await ArtifactRepo.put(t.db, { jobId, name: "app.tar", sizeBytes: 100, storageKey: "s3/3" });
    expect(await ArtifactRepo.get(t.db, jobId, "report.html")).toMatchObject({
      contentType: "text/html",
      sizeBytes: 12,
      storageKey: "s3/2",
      stepName: null,
    });
    const { artifacts, totalBytes } = await ArtifactRepo.list(t.db, jobId);
    expect(artifacts.map((a) => a.name)).toEqual(["app.tar", "report.html"]);
    expect(totalBytes).toBe(112);
    expect(await ArtifactRepo.totalSize(t.db, jobId)).toBe(112);
    expect(await ArtifactRepo.remove(t.db, jobId, "app.tar")).toBe("s3/3");
    expect(await ArtifactRepo.remove(t.db, jobId, "app.tar")).toBeUndefined();
    expect(
      await errorOf(() => ArtifactRepo.put(t.db, { jobId: randomUUID(), name: "x", sizeBytes: 1, storageKey: "k" })),
    ).toBeInstanceOf(JobNotFoundError);
    for (const bad of [
      { jobId, name: "", sizeBytes: 1, storageKey: "k" },
      { jobId, name: "x", sizeBytes: -1, storageKey: "k" },
      { jobId, name: "x", sizeBytes: 1, storageKey: "" },
    ]) {
      expect(await errorOf(() => ArtifactRepo.put(t.db, bad))).toBeInstanceOf(InvalidInputError);
    }
    expect((await ArtifactRepo.list(t.db, jobId)).artifacts).toHaveLength(1);
  });

  it("two uploads of one name racing: each replaced key is answered once", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "a", sourceType: "api" }, steps);
    const [a, b] = [otherPool(), otherPool()];
    const keys = Array.from({ length: 10 }, (_, i) => `obj/${i}`);
    const results = await Promise.all(
      keys.map((storageKey, i) => ArtifactRepo.put(i % 2 ? a : b, { jobId, name: "same", sizeBytes: 1, storageKey })),
    );
    const replaced = results.map((r) => r.replacedStorageKey).filter((k) => k !== undefined);
    const kept = (await ArtifactRepo.get(t.db, jobId, "same"))?.storageKey;
    // Every key but the one kept was replaced exactly once.
    expect([...replaced, kept].sort()).toEqual([...keys].sort());
  });

  it("the retention purge removes a job's artifacts with it and records their keys to delete, in batches", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const jobId = await JobRepo.createWithSteps(t.db, { taskName: "old", sourceType: "api" }, [
        { stepName: "only", action: "x", actionType: "pod" },
      ]);
      await JobStepRepo.complete(t.db, { jobId, stepName: "only" });
      await ArtifactRepo.put(t.db, { jobId, name: "a", sizeBytes: 1, storageKey: `purge/${i}/a` });
      await ArtifactRepo.put(t.db, { jobId, name: "b", sizeBytes: 1, storageKey: `purge/${i}/b` });
      ids.push(jobId);
    }
    await t.db.execute(sql`update job set created_at = now() - interval '40 days'
      where job_id = any(${sql.param(ids)}::uuid[])`);
    await t.db.execute(sql`update job_result set completed_at = now() - interval '40 days'
      where job_id = any(${sql.param(ids)}::uuid[])`);
    const counts = await purgeFinished(t.db, { olderThan: 30 * 86_400_000, batchSize: 2, pauseMs: 0 });
    expect(counts).toMatchObject({ jobs: 5, artifacts: 10 });
    const { rows } = await t.db.execute<{ n: number }>(
      sql`select count(*)::int as n from job_artifact where job_id = any(${sql.param(ids)}::uuid[])`,
    );
    expect(rows[0]?.n).toBe(0);
    const pending = (await ArtifactRepo.pendingDeletions(t.db, { limit: 1000 })).filter((d) =>
      ids.includes(d.jobId ?? ""),
    );
    expect(pending.map((d) => d.storageKey).sort()).toEqual(
      ids.flatMap((_, i) => [`purge/${i}/a`, `purge/${i}/b`]).sort(),
    );
    expect(
      await ArtifactRepo.confirmDeleted(
        t.db,
        pending.map((d) => d.id),
      ),
    ).toBe(10);
    expect(
      (await ArtifactRepo.pendingDeletions(t.db, { limit: 1000 })).filter((d) => ids.includes(d.jobId ?? "")),
    ).toEqual([]);
  });
});

describe("task and workspace state", () => {
  it("latest, list newest first, insertAndPrune keeps N and returns the pruned keys, deleteAll", async () => {
    const scope = { workspace: `ws-${randomUUID()}`, task: "backup" };
    expect(await TaskStateRepo.latest(t.db, scope)).toBeUndefined();
    const pruned: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await TaskStateRepo.insertAndPrune(
        t.db,
        { ...scope, storageKey: `st/${i}`, sizeBytes: i, isJson: true },
        { keep: 3 },
      );
      pruned.push(...r.pruned);
    }
    expect(pruned).toEqual(["st/0", "st/1"]);
    expect(await TaskStateRepo.latest(t.db, scope)).toMatchObject({
      storageKey: "st/4",
      isJson: true,
      taskName: "backup",
    });
    expect((await TaskStateRepo.list(t.db, scope)).map((s) => s.storageKey)).toEqual(["st/4", "st/3", "st/2"]);
    // The workspace's own state is another scope.
    await TaskStateRepo.insertAndPrune(
      t.db,
      { workspace: scope.workspace, storageKey: "ws/0", sizeBytes: 1 },
      { keep: 1 },
    );
    expect(await TaskStateRepo.latest(t.db, { workspace: scope.workspace })).toMatchObject({
      storageKey: "ws/0",
      taskName: "",
    });
    expect((await TaskStateRepo.deleteAll(t.db, scope)).sort()).toEqual(["st/2", "st/3", "st/4"]);
    expect(await TaskStateRepo.latest(t.db, scope)).toBeUndefined();
    expect(
      await errorOf(() => TaskStateRepo.insertAndPrune(t.db, { ...scope, storageKey: "x", sizeBytes: 1 }, { keep: 0 })),
    ).toBeInstanceOf(InvalidInputError);
  });

  it("concurrent inserts on two connections keep exactly `keep`, each pruned key returned once", async () => {
    const scope = { workspace: `ws-${randomUUID()}`, task: "t" };
    const [a, b] = [otherPool(), otherPool()];
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        TaskStateRepo.insertAndPrune(i % 2 ? a : b, { ...scope, storageKey: `c/${i}`, sizeBytes: 1 }, { keep: 4 }),
      ),
    );
    const pruned = results.flatMap((r) => r.pruned);
    expect(new Set(pruned).size).toBe(pruned.length);
    expect(pruned).toHaveLength(8);
    const left = (await TaskStateRepo.list(t.db, scope)).map((s) => s.storageKey);
    expect(left).toHaveLength(4);
    expect([...pruned, ...left].sort()).toEqual(Array.from({ length: 12 }, (_, i) => `c/${i}`).sort());
  });
});

describe("durations", () => {
  it("per task: count, p50, p95, min, max of job and step durations over a window, and the recent runs", async () => {
    const workspace = `dur-${randomUUID()}`;
    const ids: string[] = [];
    for (let i = 1; i <= 4; i++) {
      const jobId = await JobRepo.createWithSteps(t.db, { workspace, taskName: "build", sourceType: "api" }, steps);
      await JobStepRepo.complete(t.db, { jobId, stepName: "build" });
      await JobStepRepo.complete(t.db, { jobId, stepName: "deploy" });
      ids.push(jobId);
      // Durations of i seconds (job), i/2 (each step), by setting the times the run recorded
      // (the finished job's and steps' results).
      await t.db.execute(sql`update job_result set started_at = completed_at - make_interval(secs => ${i})
        where job_id = ${jobId}`);
      await t.db.execute(sql`update step_result set started_at = completed_at - make_interval(secs => ${i / 2})
        where job_id = ${jobId}`);
    }
    await JobRepo.createWithSteps(t.db, { workspace, taskName: "other", sourceType: "api" }, steps);
    const now = new Date();
    const d = await JobRepo.durations(t.db, {
      workspace,
      taskName: "build",
      from: new Date(now.getTime() - 3_600_000),
      to: new Date(now.getTime() + 60_000),
      recent: 3,
    });
    expect(d.jobs).toEqual({ count: 4, p50: 2500, p95: 3850, min: 1000, max: 4000 });
    expect(d.steps).toEqual([
      { stepName: "build", count: 4, p50: 1250, p95: 1925, min: 500, max: 2000 },
      { stepName: "deploy", count: 4, p50: 1250, p95: 1925, min: 500, max: 2000 },
    ]);
    expect(d.recent.map((r) => [r.jobId, r.durationMs])).toEqual([
      [ids[3], 4000],
      [ids[2], 3000],
      [ids[1], 2000],
    ]);
    const hourAgo = new Date(now.getTime() - 3_600_000);
    const none = await JobRepo.durations(t.db, { workspace, taskName: "nothing", from: hourAgo, to: now });
    expect(none).toEqual({ jobs: { count: 0, p50: null, p95: null, min: null, max: null }, steps: [], recent: [] });
    for (const bad of [
      { workspace, taskName: "build", from: now, to: now },
      { workspace, taskName: "", from: hourAgo, to: now },
      { workspace, taskName: "build", from: hourAgo, to: now, recent: 101 },
      { workspace, taskName: "build", from: new Date(0), to: now },
    ]) {
      expect(await errorOf(() => JobRepo.durations(t.db, bad))).toBeInstanceOf(InvalidInputError);
    }
  });
});
