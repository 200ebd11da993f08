import { AUDIT_ACTIONS, type NewFlowStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  AuditRepo,
  type Executor,
  JobRepo,
  JobStepRepo,
  StepOwnershipError,
  type StepRef,
  WorkerRepo,
} from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

/**
 * A report from an attempt that is no longer the step's current one (the
 * step was rescued, retried, claimed again, finished by someone else) is
 * refused with `StepOwnershipError` in every status the step can be in, by
 * every guarded call, and writes nothing. Each status is reached by the
 * real operations, not forced by SQL.
 */
const t = useTestDb();

/** Every guarded call, each with the stale ref; returns what it threw. */
const guardedCalls: Record<string, (r: Required<StepRef>) => Promise<unknown>> = {
  complete: (r) => JobStepRepo.complete(t.db, r, { late: true }),
  fail: (r) => JobStepRepo.fail(t.db, r, "late"),
  markCompleted: (r) => JobStepRepo.markCompleted(t.db, r.jobId, r.stepName, null, r),
  markFailed: (r) => JobStepRepo.markFailed(t.db, r.jobId, r.stepName, "late", r),
  markCancelled: (r) => JobStepRepo.markCancelled(t.db, r),
  reportMany: async (r) => {
    const [out] = await JobStepRepo.reportMany(t.db, [{ ...r, outcome: "completed" }]);
    if (out && !out.ok) throw out.error;
  },
  reportAndClaim: (r) => JobStepRepo.reportAndClaim(t.db, { ...r, outcome: "completed" }, ["docker"]),
};

async function rowOf(db: Executor, jobId: string, stepName: string) {
  return (await JobStepRepo.getStepsForJob(db, jobId)).find((s) => s.stepName === stepName);
}

/** Runs every guarded call with `stale` and checks each is refused as not the current claim, the row unchanged. */
async function expectStaleEverywhere(stale: Required<StepRef>, status: string) {
  const before = await rowOf(t.db, stale.jobId, stale.stepName);
  expect(before?.status).toBe(status);
  for (const [name, call] of Object.entries(guardedCalls)) {
    const error = await errorOf(() => call(stale));
    expect([status, name, error]).toEqual([status, name, expect.any(StepOwnershipError)]);
    expect([status, name, error]).toMatchObject([
      status,
      name,
      { jobId: stale.jobId, stepName: stale.stepName, currentStatus: status },
    ]);
  }
  expect(await rowOf(t.db, stale.jobId, stale.stepName)).toEqual(before);
}

const retrying: NewFlowStep = {
  stepName: "s",
  action: "x",
  actionType: "docker",
  maxRetries: 1,
  retryBackoffSecs: 0,
};

/** A job whose step `s` (docker, one retry, no backoff) was claimed by `w1` in attempt 1, which then failed and was retried. */
async function retriedOnce() {
  const jobId = await JobRepo.createWithSteps(t.db, { taskName: "own", sourceType: "api" }, [
    retrying,
    { stepName: "after", action: "x", actionType: "pod", dependsOn: ["s"] },
  ]);
  const w1 = await registerWorker(t.db);
  await JobStepRepo.markRunning(t.db, jobId, "s", w1);
  const stale = { jobId, stepName: "s", workerId: w1, attempt: 1 };
  expect(await JobStepRepo.fail(t.db, stale, "boom")).toMatchObject({ retried: true });
  return { jobId, w1, stale };
}

describe("a stale report is StepOwnershipError in every status", () => {
  it("pending: the step was never claimed", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "own", sourceType: "api" }, [
      { stepName: "a", action: "x", actionType: "pod" },
      { stepName: "s", action: "x", actionType: "docker", dependsOn: ["a"] },
    ]);
    await expectStaleEverywhere({ jobId, stepName: "s", workerId: await registerWorker(t.db), attempt: 1 }, "pending");
  });

  it("ready (retried), running (claimed again), completed (by the next claim)", async () => {
    const { jobId, stale } = await retriedOnce();
    await expectStaleEverywhere(stale, "ready");
    const w2 = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "s", w2);
    await expectStaleEverywhere(stale, "running");
    await JobStepRepo.complete(t.db, { jobId, stepName: "s", workerId: w2, attempt: 2 });
    await expectStaleEverywhere(stale, "completed");
  });

  it("failed (the next claim's failure, final)", async () => {
    const { jobId, stale } = await retriedOnce();
    const w2 = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "s", w2);
    await JobStepRepo.fail(t.db, { jobId, stepName: "s", workerId: w2, attempt: 2 }, "again");
    await expectStaleEverywhere(stale, "failed");
  });

  it("skipped and cancelled (the server's decisions while the step waited for its retry)", async () => {
    const skipped = await retriedOnce();
    await JobStepRepo.markSkipped(t.db, skipped.jobId, "s");
    await expectStaleEverywhere(skipped.stale, "skipped");
    const cancelled = await retriedOnce();
    await JobRepo.cancel(t.db, cancelled.jobId);
    await expectStaleEverywhere(cancelled.stale, "cancelled");
  });

  it("after a rescue: the old worker's late complete is StepOwnershipError (never 'ready to completed')", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "own", sourceType: "api" }, [
      { stepName: "s", action: "x", actionType: "docker" },
    ]);
    const w1 = await registerWorker(t.db, ["docker"]);
    await JobStepRepo.markRunning(t.db, jobId, "s", w1);
    await t.db.execute(sql`update worker set last_heartbeat = now() - interval '1 hour' where worker_id = ${w1}`);
    const rescued = await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 60_000 });
    expect(rescued.requeued).toMatchObject([{ jobId, stepName: "s", workerId: w1 }]);
    const error = await errorOf(() => JobStepRepo.complete(t.db, { jobId, stepName: "s", workerId: w1, attempt: 1 }));
    expect(error).toBeInstanceOf(StepOwnershipError);
    expect(error.message).toMatch(/is ready, held by no worker in attempt 1, not by .* in attempt 1/);
  });
});

describe("the heartbeat's give-back is audited", () => {
  it("an orphaned claim given back by a heartbeat writes step.rescued, by the worker", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "own", sourceType: "api" }, [
      { stepName: "s", action: "x", actionType: "docker" },
    ]);
    const w = await registerWorker(t.db, ["docker"]);
    await WorkerRepo.heartbeat(t.db, w);
    await JobStepRepo.markRunning(t.db, jobId, "s", w);
    // Claimed before the previous heartbeat and not listed: an orphan.
    await t.db.execute(sql`update step_live set started_at = now() - interval '1 minute' where job_id = ${jobId}`);
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    expect((await rowOf(t.db, jobId, "s"))?.status).toBe("ready");
    const { events } = await AuditRepo.list(t.db, { entityType: "job", entityId: jobId, limit: 100 });
    expect(events.filter((e) => e.action === AUDIT_ACTIONS.stepRescued)).toMatchObject([
      {
        actorType: "worker",
        actorId: w,
        details: { stepName: "s", workerId: w, attempt: 1, outcome: "requeued", reason: "claim lost" },
      },
    ]);
  });
});
