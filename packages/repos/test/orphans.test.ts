import { worker } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError, JobRepo, JobStepRepo, StepOwnershipError, WorkerRepo } from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.execute(sql`delete from worker`);
});

/** a → b, both shell; `a` with the given retry policy. */
const createChain = (maxRetries = 0) =>
  JobRepo.createWithSteps(t.db, { taskName: "chain", sourceType: "api" }, [
    { stepName: "a", actionName: "x", actionType: "shell", maxRetries, retryBackoffSecs: 0 },
    { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
  ]);

const stepOf = async (jobId: string, stepName: string) =>
  (await JobStepRepo.getStepsForJob(t.db, jobId)).find((s) => s.stepName === stepName);

const lastHeartbeat = async (workerId: string) => (await WorkerRepo.get(t.db, workerId))?.lastHeartbeat;

describe("heartbeat({ running }) gives back orphaned claims", () => {
  it("a claim the worker never heard of (not listed), made before its previous heartbeat, goes back to ready", async () => {
    const jobId = await createChain();
    const w = await registerWorker(t.db, ["shell"]);
    // The claim commits; pretend its reply was lost: the worker lists nothing.
    const claimed = await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    expect(claimed).toMatchObject({ stepName: "a", attempts: 1 });
    // First heartbeat after the claim: the claim may still be in flight, so it stays.
    expect(await WorkerRepo.heartbeat(t.db, w, { running: [] })).toEqual([]);
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "running", workerId: w, attempts: 1 });
    // Next heartbeat: it was claimed before the previous one and is still not listed: an orphan.
    expect(await WorkerRepo.heartbeat(t.db, w, { running: [] })).toEqual([]);
    const a = await stepOf(jobId, "a");
    // maxRetries 0, yet back to ready: a lost claim is not the step's failure (the crash budget).
    expect(a).toMatchObject({ status: "ready", workerId: null, attempts: 1, rescues: 1, maxRetries: 1 });
    expect(a?.retryHistory).toMatchObject([
      { attempt: 1, workerId: w, error: `claim lost: worker ${w} did not list it in its heartbeat` },
    ]);
    // A late report for that claim is refused; the next claim is attempt 2 and completes normally.
    expect(
      await errorOf(() => JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 }, {})),
    ).toMatchObject({ name: "StepOwnershipError", currentStatus: "ready" }); // attempt 1 is no longer the step's claim
    expect(await JobStepRepo.claimReadyStep(t.db, ["shell"], w)).toMatchObject({ stepName: "a", attempts: 2 });
    expect(
      await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 2 }, { ok: 2 }),
    ).toMatchObject({ promoted: ["b"] });
  });

  it("a claim in flight (made after the previous heartbeat) is never taken back; a listed one never", async () => {
    const jobId = await createChain();
    const w = await registerWorker(t.db, ["shell"]);
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    const before = await lastHeartbeat(w);
    const claimed = await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    const ref = { jobId, stepName: "a", attempt: claimed?.attempts as number };
    expect(claimed?.startedAt?.getTime()).toBeGreaterThanOrEqual((before as Date).getTime());
    // Heartbeats race the claim's reply: the list lacks it, but it was claimed after the previous heartbeat.
    expect(await WorkerRepo.heartbeat(t.db, w, { running: [] })).toEqual([]);
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "running", workerId: w, attempts: 1, rescues: 0 });
    // Listed from then on: never touched, however many heartbeats go by.
    for (let i = 0; i < 3; i++) expect(await WorkerRepo.heartbeat(t.db, w, { running: [ref] })).toEqual([]);
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "running", workerId: w, attempts: 1, rescues: 0 });
    // Without `running`, nothing is ever given back (the old behaviour).
    for (let i = 0; i < 2; i++) expect(await WorkerRepo.heartbeat(t.db, w)).toEqual([]);
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "running", workerId: w, rescues: 0 });
    expect(await JobStepRepo.complete(t.db, { ...ref, workerId: w }, { ok: 1 })).toMatchObject({
      promoted: ["b"],
      repeated: false,
    });
  });

  it("with the crash budget spent and no retries left, the orphan fails and its job advances like any failure", async () => {
    const jobId = await createChain(0);
    const w = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    await WorkerRepo.heartbeat(t.db, w, { running: [], maxRescues: 0 });
    await WorkerRepo.heartbeat(t.db, w, { running: [], maxRescues: 0 });
    expect((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => [s.stepName, s.status])).toEqual([
      ["a", "failed"],
      ["b", "skipped"],
    ]);
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("failed");
  });

  it("with retries left (maxRescues 0), the orphan is retried by its policy, spending one", async () => {
    const jobId = await createChain(1);
    const w = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    await WorkerRepo.heartbeat(t.db, w, { running: [], maxRescues: 0 });
    await WorkerRepo.heartbeat(t.db, w, { running: [], maxRescues: 0 });
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "ready", rescues: 0, maxRetries: 1, attempts: 1 });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("running");
  });

  it("a stale attempt listed is reported stopped, and the newer claim it lacks is the orphan", async () => {
    const jobId = await createChain(0);
    const w = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    await WorkerRepo.heartbeat(t.db, w, { running: [] }); // attempt 1 given back
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w); // attempt 2, reply lost too
    expect(
      await errorOf(() => JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 }, {})),
    ).toBeInstanceOf(StepOwnershipError);
    await WorkerRepo.heartbeat(t.db, w, { running: [{ jobId, stepName: "a", attempt: 1 }] });
    const stop = await WorkerRepo.heartbeat(t.db, w, { running: [{ jobId, stepName: "a", attempt: 1 }] });
    expect(stop).toMatchObject([{ jobId, stepName: "a", attempt: 1, reason: expect.stringMatching(/^claim lost/) }]);
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "ready", attempts: 2, rescues: 2 });
  });

  it("a cancelled job's orphan is cancelled, not requeued", async () => {
    const jobId = await createChain(0);
    const w = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    await JobRepo.cancel(t.db, jobId, { reason: "stop" });
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "cancelled" });
    expect(await stepOf(jobId, "b")).toMatchObject({ status: "cancelled" });
  });

  it("skips a job a report holds (looked at on the next heartbeat), and bad input changes nothing", async () => {
    const jobId = await createChain(0);
    const w = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    const other = t.openPool({ max: 1 });
    try {
      await other.transaction(async (tx) => {
        await tx.execute(sql`select * from stroem_lock_job(${jobId})`);
        expect(await WorkerRepo.heartbeat(t.db, w, { running: [] })).toEqual([]);
        expect(await stepOf(jobId, "a")).toMatchObject({ status: "running" });
      });
    } finally {
      await other.$client.end();
    }
    await WorkerRepo.heartbeat(t.db, w, { running: [] });
    expect(await stepOf(jobId, "a")).toMatchObject({ status: "ready" });

    await t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
    const was = await lastHeartbeat(w);
    for (const bad of [-1, 1001, 0.5]) {
      expect(await errorOf(() => WorkerRepo.heartbeat(t.db, w, { running: [], maxRescues: bad }))).toBeInstanceOf(
        InvalidInputError,
      );
    }
    expect(await lastHeartbeat(w)).toEqual(was);
  });

  it("heartbeat brings back a worker marked inactive", async () => {
    const w = await registerWorker(t.db, ["shell"]);
    await t.db.update(worker).set({ status: "inactive" }).where(eq(worker.workerId, w));
    await WorkerRepo.heartbeat(t.db, w);
    expect((await WorkerRepo.get(t.db, w))?.status).toBe("active");
  });
});
