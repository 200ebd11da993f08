import type { NewFlowStep } from "@stroem/schema";
import { worker } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import {
  type Executor,
  InvalidInputError,
  InvalidTransitionError,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  StepOwnershipError,
  WorkerRepo,
} from "../src/index.js";
import { deferred, errorOf, registerWorker, waitFor } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
});

const newJob = { taskName: "t", sourceType: "api" } as const;
// a and b ready; c waits for both.
const flow: NewFlowStep[] = [
  { stepName: "a", actionName: "x", actionType: "shell" },
  { stepName: "b", actionName: "x", actionType: "shell", maxRetries: 3, retryBackoffSecs: 0 },
  { stepName: "c", actionName: "x", actionType: "shell", dependsOn: ["a", "b"] },
];

async function statuses(jobId: string) {
  const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
  return Object.fromEntries(steps.map((s) => [s.stepName, s.status]));
}

/** A session of this test's database waits for a lock: the interleaving the test wants has happened. */
const someoneWaits = () =>
  waitFor(async () => {
    const r = await t.db.execute<{ n: number }>(
      sql`select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock'`,
    );
    return (r.rows[0]?.n ?? 0) > 0;
  }, 20_000);

/** Runs `body` in a transaction on a connection of its own, kept open until `release` resolves. */
function holdOpen<T>(body: (tx: Executor) => Promise<T>) {
  const pool = t.openPool({ max: 1 });
  const ready = deferred<T>();
  const release = deferred();
  const done = pool
    .transaction(async (tx) => {
      ready.resolve(await body(tx));
      await release.promise;
    })
    .finally(() => pool.$client.end());
  return { ready: ready.promise, release: release.resolve, done };
}

describe("JobRepo.cancel", () => {
  it("cancels pending and ready steps, flags running ones; the worker learns it by heartbeat and reports markCancelled", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    const [claimed] = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    expect(claimed?.stepName).toBe("a");
    expect(await WorkerRepo.heartbeat(t.db, w)).toEqual([]);

    expect(await JobRepo.cancel(t.db, jobId, { reason: "user asked" })).toEqual({
      alreadyCancelled: false,
      cancelled: ["b", "c"],
      cancelRequested: ["a"],
      children: [],
    });
    const job = await JobRepo.get(t.db, jobId);
    expect(job).toMatchObject({ status: "cancelled", cancelReason: "user asked" });
    expect(job?.completedAt).toBeInstanceOf(Date);
    expect(await statuses(jobId)).toEqual({ a: "running", b: "cancelled", c: "cancelled" });
    // Nothing of it is claimed any more.
    expect(await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 10)).toEqual([]);

    const requests = await WorkerRepo.heartbeat(t.db, w);
    expect(requests).toEqual([
      { jobId, stepName: "a", attempt: 1, requestedAt: expect.any(Date), reason: "user asked" },
    ]);
    const ref = { jobId, stepName: "a", workerId: w, attempt: 1 };
    expect(await errorOf(() => JobStepRepo.markCancelled(t.db, { ...ref, attempt: 2 }))).toBeInstanceOf(
      StepOwnershipError,
    );
    expect(await JobStepRepo.markCancelled(t.db, ref)).toEqual({ repeated: false });
    expect(await JobStepRepo.markCancelled(t.db, ref)).toEqual({ repeated: true });
    expect(await statuses(jobId)).toEqual({ a: "cancelled", b: "cancelled", c: "cancelled" });
    expect(await WorkerRepo.heartbeat(t.db, w)).toEqual([]);

    // Again: a no-op.
    expect(await JobRepo.cancel(t.db, jobId)).toEqual({
      alreadyCancelled: true,
      cancelled: [],
      cancelRequested: [],
      children: [],
    });
  });

  it("a late report of a step of a cancelled job is recorded, promotes nothing, retries nothing", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2);
    await JobRepo.cancel(t.db, jobId);
    expect(await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 })).toMatchObject({
      promoted: [],
      skipped: [],
      jobStatus: "cancelled",
    });
    expect(await JobStepRepo.fail(t.db, { jobId, stepName: "b", workerId: w, attempt: 1 }, "x")).toMatchObject({
      retried: false,
      jobStatus: "cancelled",
    });
    expect(await statuses(jobId)).toEqual({ a: "completed", b: "failed", c: "cancelled" });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("cancelled");
  });

  it("refuses a completed or failed job, an unknown one, bad input, writing nothing", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow.slice(0, 1));
    await JobStepRepo.complete(t.db, { jobId, stepName: "a" });
    expect(await errorOf(() => JobRepo.cancel(t.db, jobId))).toMatchObject({
      name: "InvalidTransitionError",
      currentStatus: "completed",
    });
    const failed = await JobRepo.createWithSteps(t.db, newJob, flow.slice(0, 1));
    await JobStepRepo.fail(t.db, { jobId: failed, stepName: "a" }, "x");
    expect(await errorOf(() => JobRepo.cancel(t.db, failed))).toBeInstanceOf(InvalidTransitionError);
    expect(await errorOf(() => JobRepo.cancel(t.db, "00000000-0000-4000-8000-000000000000"))).toBeInstanceOf(
      JobNotFoundError,
    );
    const pending = await JobRepo.createWithSteps(t.db, newJob, flow);
    expect(await errorOf(() => JobRepo.cancel(t.db, "x"))).toMatchObject({ field: "jobId" });
    expect(await errorOf(() => JobRepo.cancel(t.db, pending, { reason: "" }))).toBeInstanceOf(InvalidInputError);
    expect((await JobRepo.get(t.db, pending))?.status).toBe("pending");
    expect((await JobRepo.get(t.db, failed))?.status).toBe("failed");
  });

  it("a cancelled job takes no new steps (createSteps)", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    await JobRepo.cancel(t.db, jobId);
    const error = await errorOf(() =>
      JobStepRepo.createSteps(t.db, [
        { jobId, stepName: "late", actionName: "x", actionType: "shell", status: "ready" },
      ]),
    );
    expect(error).toMatchObject({ name: "InvalidTransitionError", currentStatus: "cancelled" });
    expect(Object.keys(await statuses(jobId))).toEqual(["a", "b", "c"]);
  });

  it("rescue never requeues a step of a cancelled job: it cancels it", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2);
    await JobRepo.cancel(t.db, jobId);
    await t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
    const rescued = await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000 });
    expect(rescued.requeued).toEqual([]);
    expect(rescued.cancelled.map((s) => s.stepName)).toEqual(["a", "b"]);
    expect(await statuses(jobId)).toEqual({ a: "cancelled", b: "cancelled", c: "cancelled" });
  });
});

describe("races (two connections, deterministic interleaving)", () => {
  it("cancel vs claim: a claim in flight is waited for and its step flagged; after a cancel, nothing is claimed", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    // The claim first, its transaction open: the cancel waits for the claimed row.
    const claim = holdOpen((tx) => JobStepRepo.claimReadySteps(tx, ["shell"], w, 1));
    expect((await claim.ready).map((s) => s.stepName)).toEqual(["a"]);
    const cancelling = JobRepo.cancel(t.db, jobId);
    await someoneWaits();
    claim.release();
    await claim.done;
    expect(await cancelling).toEqual({
      alreadyCancelled: false,
      cancelled: ["b", "c"],
      cancelRequested: ["a"],
      children: [],
    });

    // The cancel first, its transaction open: a claim skips the locked rows, and after the commit finds nothing.
    const other = await JobRepo.createWithSteps(t.db, newJob, flow);
    const cancel = holdOpen((tx) => JobRepo.cancel(tx, other));
    await cancel.ready;
    expect(await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 10)).toEqual([]);
    cancel.release();
    await cancel.done;
    expect(await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 10)).toEqual([]);
    expect(await statuses(other)).toEqual({ a: "cancelled", b: "cancelled", c: "cancelled" });
  });

  it("cancel vs report: a report in flight finishes first and its promotions are cancelled; a report after the cancel promotes nothing", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2);
    await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 });
    const report = holdOpen((tx) => JobStepRepo.complete(tx, { jobId, stepName: "b", workerId: w, attempt: 1 }));
    expect((await report.ready).promoted).toEqual(["c"]);
    const cancelling = JobRepo.cancel(t.db, jobId);
    await someoneWaits();
    report.release();
    await report.done;
    expect(await cancelling).toEqual({ alreadyCancelled: false, cancelled: ["c"], cancelRequested: [], children: [] });

    const other = await JobRepo.createWithSteps(t.db, newJob, flow);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2);
    await JobStepRepo.complete(t.db, { jobId: other, stepName: "a", workerId: w, attempt: 1 });
    const cancel = holdOpen((tx) => JobRepo.cancel(tx, other));
    await cancel.ready;
    const reporting = JobStepRepo.complete(t.db, { jobId: other, stepName: "b", workerId: w, attempt: 1 });
    await someoneWaits();
    cancel.release();
    await cancel.done;
    expect(await reporting).toMatchObject({ promoted: [], jobStatus: "cancelled" });
    expect(await statuses(other)).toEqual({ a: "completed", b: "completed", c: "cancelled" });
  });

  it("cancel vs rescue: a requeue in flight is waited for, then cancelled", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2);
    await t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
    // No crash budget (maxRescues 0): each step's own retry policy decides.
    const rescue = holdOpen((tx) => JobStepRepo.rescueStaleSteps(tx, { staleAfterMs: 1000, maxRescues: 0 }));
    expect((await rescue.ready).requeued.map((s) => s.stepName)).toEqual(["b"]); // a: no retries, failed
    const cancelling = JobRepo.cancel(t.db, jobId);
    await someoneWaits();
    rescue.release();
    await rescue.done;
    // The rescue failed `a` (no retries; `c` skipped) and requeued `b`: the cancel, after it, cancels `b`.
    expect(await cancelling).toEqual({ alreadyCancelled: false, cancelled: ["b"], cancelRequested: [], children: [] });
    expect(await statuses(jobId)).toEqual({ a: "failed", b: "cancelled", c: "skipped" });
    expect(await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 10)).toEqual([]);
    // (A rescue after the cancel: "rescue never requeues a step of a cancelled job" above.)
  });

  it("cancel vs advance: an advance in flight is waited for; an advance after the cancel leaves the job alone", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2);
    await JobStepRepo.markCompleted(t.db, jobId, "a", null, { workerId: w, attempt: 1 });
    await JobStepRepo.markCompleted(t.db, jobId, "b", null, { workerId: w, attempt: 1 });
    const advance = holdOpen((tx) => JobRepo.advance(tx, jobId));
    expect((await advance.ready).promoted).toEqual(["c"]);
    const cancelling = JobRepo.cancel(t.db, jobId);
    await someoneWaits();
    advance.release();
    await advance.done;
    expect(await cancelling).toMatchObject({ cancelled: ["c"] });
    expect(await JobRepo.advance(t.db, jobId)).toEqual({ promoted: [], skipped: [], jobStatus: "cancelled" });
  });
});
