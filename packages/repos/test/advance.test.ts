import { randomUUID } from "node:crypto";
import { type Flow, FlowValidationError, stepAction } from "@stroem/orchestrator";
import { jobState, jobStepState } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  type AdvanceResult,
  type Executor,
  InvalidInputError,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
} from "../src/index.js";
import { deferred, errorOf, registerWorker, waitFor } from "./helpers.js";

const t = useTestDb();

const diamondFlow: Flow = {
  step1: { actionName: "a" },
  step2: { actionName: "a", dependsOn: ["step1"] },
  step4: { actionName: "a", dependsOn: ["step1"] },
  step3: { actionName: "a", dependsOn: ["step2", "step4"] },
};

const asSteps = (flow: Flow) =>
  Object.entries(flow).map(([stepName, s]) => ({
    stepName,
    actionName: stepAction(s) ?? "",
    actionType: "shell" as const,
    dependsOn: s.dependsOn,
    continueOnFailure: s.continueOnFailure,
  }));

const createJob = (db: Executor, flow: Flow) =>
  JobRepo.createWithSteps(db, { taskName: "flow", sourceType: "api" }, asSteps(flow));

async function statuses(jobId: string) {
  const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
  return Object.fromEntries(steps.map((s) => [s.stepName, s.status]));
}

/** Worker path: mark the step (running first), then advance, in one transaction. */
async function finish(db: Executor, jobId: string, stepName: string, workerId: string, ok = true) {
  await JobStepRepo.markRunning(db, jobId, stepName, workerId);
  return db.transaction(async (tx) => {
    if (ok) await JobStepRepo.markCompleted(tx, jobId, stepName, { ok });
    else await JobStepRepo.markFailed(tx, jobId, stepName, "boom");
    return JobRepo.advance(tx, jobId);
  });
}

/** Completes an already running step and advances, in one transaction. */
const finishRunning = (db: Executor, jobId: string, stepName: string) =>
  db.transaction(async (tx) => {
    await JobStepRepo.markCompleted(tx, jobId, stepName);
    return JobRepo.advance(tx, jobId);
  });

describe("createWithSteps", () => {
  it("writes the job and its steps with initial statuses and stored dependencies", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    expect(await statuses(jobId)).toEqual({ step1: "ready", step2: "pending", step3: "pending", step4: "pending" });
    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.find((s) => s.stepName === "step3")?.dependsOn).toEqual(["step2", "step4"]);
    expect(steps.find((s) => s.stepName === "step1")?.readyAt).toBeInstanceOf(Date);
  });

  it("rejects an invalid flow before writing anything", async () => {
    const [{ before } = { before: -1 }] = await t.db.select({ before: sql<number>`count(*)::int` }).from(jobState);
    const cyclic: Flow = { a: { actionName: "x", dependsOn: ["b"] }, b: { actionName: "x", dependsOn: ["a"] } };
    const error = await errorOf(() => createJob(t.db, cyclic));
    expect(error).toBeInstanceOf(FlowValidationError);
    expect(error.message).toContain("cycle: a -> b -> a");
    const dup = [...asSteps(diamondFlow), asSteps(diamondFlow)[0]!];
    expect(
      await errorOf(() => JobRepo.createWithSteps(t.db, { taskName: "x", sourceType: "api" }, dup)),
    ).toBeInstanceOf(FlowValidationError);
    const badType = asSteps(diamondFlow).map((s, i) => (i === 2 ? { ...s, actionType: "vm" as "shell" } : s));
    expect(
      await errorOf(() => JobRepo.createWithSteps(t.db, { taskName: "x", sourceType: "api" }, badType)),
    ).toBeInstanceOf(InvalidInputError);
    const [{ after } = { after: -2 }] = await t.db.select({ after: sql<number>`count(*)::int` }).from(jobState);
    expect(after).toBe(before);
  });
});

describe("promoteReadySteps", () => {
  it("diamond: completing step1 promotes exactly step2 and step4; completing both promotes exactly step3", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    const w = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "step1", w);
    await JobStepRepo.markCompleted(t.db, jobId, "step1");
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, diamondFlow)).toEqual(["step2", "step4"]);
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, diamondFlow)).toEqual([]);
    await JobStepRepo.markRunning(t.db, jobId, "step2", w);
    await JobStepRepo.markCompleted(t.db, jobId, "step2");
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, diamondFlow)).toEqual([]);
    await JobStepRepo.markRunning(t.db, jobId, "step4", w);
    await JobStepRepo.markCompleted(t.db, jobId, "step4");
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, diamondFlow)).toEqual(["step3"]);
    expect(await statuses(jobId)).toEqual({
      step1: "completed",
      step2: "completed",
      step3: "ready",
      step4: "completed",
    });
  });

  it("rejects a flow that does not match the job's steps, changing nothing", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    const { step3: _, ...partial } = diamondFlow;
    expect(await errorOf(() => JobStepRepo.promoteReadySteps(t.db, jobId, partial))).toBeInstanceOf(
      FlowValidationError,
    );
    expect(await errorOf(() => JobStepRepo.promoteReadySteps(t.db, randomUUID(), diamondFlow))).toBeInstanceOf(
      JobNotFoundError,
    );
  });
});

describe("skipUnreachableSteps", () => {
  it("skips the whole chain below a failure at once and promotes nothing", async () => {
    const flow: Flow = { root: { actionName: "x" }, other: { actionName: "x" } };
    for (let i = 0; i < 50; i++) flow[`c${i}`] = { actionName: "x", dependsOn: [i ? `c${i - 1}` : "root"] };
    flow.join = { actionName: "x", dependsOn: ["c49", "other"] };
    const jobId = await createJob(t.db, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "root", w);
    await JobStepRepo.markFailed(t.db, jobId, "root", "boom");
    const skipped = await JobStepRepo.skipUnreachableSteps(t.db, jobId, flow);
    expect(skipped).toEqual(Array.from({ length: 50 }, (_, i) => `c${i}`));
    // The join also waits for "other", which may still complete: not skipped yet.
    expect(await statuses(jobId)).toMatchObject({ other: "ready", join: "pending" });
    expect(await JobStepRepo.skipUnreachableSteps(t.db, jobId, flow)).toEqual([]);
  });
});

describe("JobRepo.advance", () => {
  it("runs a diamond to completion through the worker path", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    const w = await registerWorker(t.db);
    expect(await finish(t.db, jobId, "step1", w)).toEqual({
      promoted: ["step2", "step4"],
      skipped: [],
      jobStatus: "running",
    });
    expect((await finish(t.db, jobId, "step2", w)).promoted).toEqual([]);
    expect(await finish(t.db, jobId, "step4", w)).toEqual({ promoted: ["step3"], skipped: [], jobStatus: "running" });
    expect(await finish(t.db, jobId, "step3", w)).toEqual({ promoted: [], skipped: [], jobStatus: "completed" });
    const done = await JobRepo.get(t.db, jobId);
    expect(done?.completedAt).toBeInstanceOf(Date);
    expect(done?.startedAt?.getTime()).toBeLessThanOrEqual(done?.completedAt?.getTime() ?? 0);
    // Idempotent.
    expect(await JobRepo.advance(t.db, jobId)).toEqual({ promoted: [], skipped: [], jobStatus: "completed" });
  });

  it("a failure skips what depends on it, runs continueOnFailure steps, and fails the job", async () => {
    const flow: Flow = {
      checkout: { actionName: "git" },
      lint: { actionName: "lint", dependsOn: ["checkout"] },
      test: { actionName: "test", dependsOn: ["checkout"] },
      package: { actionName: "pkg", dependsOn: ["lint", "test"] },
      deploy: { actionName: "deploy", dependsOn: ["package"] },
      notify: { actionName: "notify", dependsOn: ["deploy"], continueOnFailure: true },
    };
    const jobId = await createJob(t.db, flow);
    const w = await registerWorker(t.db);
    await finish(t.db, jobId, "checkout", w);
    await finish(t.db, jobId, "lint", w);
    expect(await finish(t.db, jobId, "test", w, false)).toEqual({
      promoted: ["notify"],
      skipped: ["package", "deploy"],
      jobStatus: "running",
    });
    expect(await finish(t.db, jobId, "notify", w)).toEqual({ promoted: [], skipped: [], jobStatus: "failed" });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("failed");
  });

  it("a failing continueOnFailure step does not fail the job", async () => {
    const flow: Flow = {
      a: { actionName: "x" },
      notify: { actionName: "n", dependsOn: ["a"], continueOnFailure: true },
    };
    const jobId = await createJob(t.db, flow);
    const w = await registerWorker(t.db);
    await finish(t.db, jobId, "a", w);
    expect((await finish(t.db, jobId, "notify", w, false)).jobStatus).toBe("completed");
  });

  it("sets a job running with the first step's start when a step was started by markRunning", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    const w = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "step1", w);
    expect((await JobRepo.advance(t.db, jobId)).jobStatus).toBe("running");
    const [s1] = await t.db
      .select()
      .from(jobStepState)
      .where(eq(jobStepState.jobId, jobId))
      .orderBy(jobStepState.stepName);
    expect((await JobRepo.get(t.db, jobId))?.startedAt).toEqual(s1?.startedAt);
  });

  it("leaves a cancelled job alone", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    await t.db.execute(sql`update job_live set status = 'cancelled', completed_at = now() where job_id = ${jobId}`);
    const w = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "step1", w);
    await JobStepRepo.markCompleted(t.db, jobId, "step1");
    expect(await JobRepo.advance(t.db, jobId)).toEqual({ promoted: [], skipped: [], jobStatus: "cancelled" });
    expect((await statuses(jobId)).step2).toBe("pending");
  });
});

describe("race-free advancement", () => {
  it("the second parent's advance waits for the first's lock, then sees its commit and promotes the join", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    const w = await registerWorker(t.db);
    await finish(t.db, jobId, "step1", w);
    await JobStepRepo.markRunning(t.db, jobId, "step2", w);
    await JobStepRepo.markRunning(t.db, jobId, "step4", w);
    const a = t.openPool({ max: 1, applicationName: "parent-a" });
    const b = t.openPool({ max: 1, applicationName: "parent-b" });
    const release = deferred();
    try {
      const aAdvanced = deferred<AdvanceResult>();
      const txA = a.transaction(async (tx) => {
        await JobStepRepo.markCompleted(tx, jobId, "step2");
        aAdvanced.resolve(await JobRepo.advance(tx, jobId));
        await release.promise; // A holds the job lock, uncommitted
      });
      // A saw step4 still running: no promotion.
      expect((await aAdvanced.promise).promoted).toEqual([]);
      const txB = b.transaction(async (tx) => {
        await JobStepRepo.markCompleted(tx, jobId, "step4");
        return JobRepo.advance(tx, jobId);
      });
      // Wait (with a deadline) until B is blocked on A's job-row lock.
      await waitFor(async () => {
        const rows = await t.db.execute<{ n: number }>(
          sql`select count(*)::int as n from pg_stat_activity where application_name = 'parent-b' and wait_event_type = 'Lock'`,
        );
        return (rows.rows[0]?.n ?? 0) > 0;
      });
      release.resolve();
      await txA;
      // B's read after the lock sees A's commit: step3 is promoted, once.
      expect(await txB).toEqual({ promoted: ["step3"], skipped: [], jobStatus: "running" });
      expect((await statuses(jobId)).step3).toBe("ready");
    } finally {
      release.resolve(); // a failed expectation must not leave A's transaction (and the test) hanging
      await a.$client.end();
      await b.$client.end();
    }
  });

  it("a report whose connection dies mid-transaction leaves nothing half-applied", async () => {
    const jobId = await createJob(t.db, diamondFlow);
    const w = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "step1", w);
    const worker = t.openPool({ max: 1 });
    try {
      const error = await errorOf(() =>
        worker.transaction(async (tx) => {
          await JobStepRepo.markCompleted(tx, jobId, "step1");
          const [{ pid } = { pid: 0 }] = (await tx.execute<{ pid: number }>(sql`select pg_backend_pid() as pid`)).rows;
          await t.db.execute(sql`select pg_terminate_backend(${pid})`); // the worker's backend is killed
          await JobRepo.advance(tx, jobId);
        }),
      );
      expect(error).toBeInstanceOf(Error);
    } finally {
      await worker.$client.end();
    }
    // The completion rolled back with the transaction: step1 is still running, nothing promoted.
    expect(await statuses(jobId)).toEqual({ step1: "running", step2: "pending", step3: "pending", step4: "pending" });
    // The worker retries on a fresh connection and the job moves on.
    expect((await finishRunning(t.db, jobId, "step1")).promoted).toEqual(["step2", "step4"]);
  });

  it("hundreds of diamonds whose parents finish concurrently: every join ready exactly once, every job finished", async () => {
    const JOBS = 200;
    const w = await registerWorker(t.db);
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i++) ids.push(await createJob(t.db, diamondFlow));
    for (const id of ids) await finish(t.db, id, "step1", w);
    for (const id of ids) {
      await JobStepRepo.markRunning(t.db, id, "step2", w);
      await JobStepRepo.markRunning(t.db, id, "step4", w);
    }
    // Two pools: the two parents of each join finish at the same moment on different connections.
    const left = t.openPool({ max: 8 });
    const right = t.openPool({ max: 8 });
    const promotedStep3 = new Map<string, number>();
    try {
      const complete = (db: Executor, id: string, name: string) =>
        db.transaction(async (tx) => {
          await JobStepRepo.markCompleted(tx, id, name);
          return JobRepo.advance(tx, id);
        });
      const results = await Promise.all(
        ids.flatMap((id) =>
          [complete(left, id, "step2"), complete(right, id, "step4")].map((p) => p.then((r) => ({ id, r }))),
        ),
      );
      for (const { id, r } of results) {
        if (r.promoted.includes("step3")) promotedStep3.set(id, (promotedStep3.get(id) ?? 0) + 1);
      }
    } finally {
      await left.$client.end();
      await right.$client.end();
    }
    for (const id of ids) {
      expect(promotedStep3.get(id), `job ${id}`).toBe(1);
      expect((await statuses(id)).step3).toBe("ready");
      // Calling advance again changes nothing.
      expect(await JobRepo.advance(t.db, id)).toEqual({ promoted: [], skipped: [], jobStatus: "running" });
    }
    // Finish the joins concurrently: every job ends completed.
    const claimers = await Promise.all(Array.from({ length: 8 }, () => registerWorker(t.db)));
    const pools = claimers.map(() => t.openPool({ max: 1 }));
    try {
      await Promise.all(
        claimers.map(async (c, i) => {
          const db = pools[i] as Executor;
          for (;;) {
            const s = await JobStepRepo.claimReadyStep(db, ["shell"], c);
            if (!s) return;
            await db.transaction(async (tx) => {
              await JobStepRepo.markCompleted(tx, s.jobId, s.stepName);
              await JobRepo.advance(tx, s.jobId);
            });
          }
        }),
      );
    } finally {
      await Promise.all(pools.map((p) => p.$client.end()));
    }
    const finished = await t.db
      .select({ status: jobState.status, n: sql<number>`count(*)::int` })
      .from(jobState)
      .where(sql`${jobState.jobId} = any(${sql.param(ids)}::uuid[])`)
      .groupBy(jobState.status);
    expect(finished).toEqual([{ status: "completed", n: JOBS }]);
    const audit = await JobStepRepo.audit(t.db, ids);
    expect(audit.byStatus.completed).toBe(JOBS * 4);
    expect(audit.claimedMoreThanOnce).toBe(0);
  });
});
