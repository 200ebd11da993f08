import { JOB_STATUSES, type JobStatus, type NewFlowStep, STEP_STATUSES, type StepStatus } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { type SQL, sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import {
  InvalidInputError,
  InvalidTransitionError,
  JobRepo,
  JobStepRepo,
  StepNotFoundError,
  StepOwnershipError,
} from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

/**
 * Every cell of the step state machine in the repos README: each call from
 * each status, allowed (the status it leads to) or refused, nothing written:
 * `StepOwnershipError` when a guarded call's claim is not the row's (a step
 * never claimed by that worker), `InvalidTransitionError` otherwise. Every
 * step that has been claimed was claimed by the guard's worker (attempt 1).
 */
const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
});

const newJob = { taskName: "t", sourceType: "api" } as const;
const flow: NewFlowStep[] = [
  { stepName: "t", actionName: "x", actionType: "shell" },
  { stepName: "other", actionName: "x", actionType: "shell" },
];

/**
 * A job whose step `t` is in `status`, and the guard of the worker that
 * claimed it (attempt 1): pending and ready ones were never claimed; running
 * and terminal ones were claimed by that worker (terminal ones then forced
 * by SQL, keeping the claim's worker and attempt).
 */
async function stepIn(status: StepStatus) {
  const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
  const workerId = await registerWorker(t.db);
  if (status === "pending") {
    await t.db.execute(sql`update step_live set status = 'pending' where job_id = ${jobId} and step_name = 't'`);
  } else if (status === "suspended") {
    // What JobStepRepo.suspend leaves on a gate (test/gates.test.ts), on this step: never claimed.
    await t.db.execute(sql`update step_live set status = 'suspended', suspended_at = now()
      where job_id = ${jobId} and step_name = 't'`);
  } else if (status !== "ready") {
    await JobStepRepo.markRunning(t.db, jobId, "t", workerId);
    if (status !== "running") {
      // A finished step's state is its step_result row: the live row updated to
      // a terminal, propagated status moves there (trigger step_live_ended).
      await t.db.execute(sql`update step_live set status = ${status}, completed_at = now(), propagated = true
        where job_id = ${jobId} and step_name = 't'`);
      const rows = await t.db.execute<{ live: number; result: number }>(sql`select
        (select count(*)::int from step_live where job_id = ${jobId} and step_name = 't') as live,
        (select count(*)::int from step_result where job_id = ${jobId} and step_name = 't') as result`);
      expect(rows.rows[0]).toEqual({ live: 0, result: 1 });
    }
  }
  return { jobId, stepName: "t", workerId, attempt: 1 };
}

/**
 * Sets columns of a step's state by hand, whichever row holds it: its
 * `step_live` row (unfinished) or its `step_result` row (finished).
 */
async function setStepState(jobId: string, stepName: string, set: SQL) {
  await t.db.execute(sql`update step_live set ${set} where job_id = ${jobId} and step_name = ${stepName}`);
  await t.db.execute(sql`update step_result set ${set} where job_id = ${jobId} and step_name = ${stepName}`);
}

type Ref = Awaited<ReturnType<typeof stepIn>>;
const unguarded = ({ jobId, stepName }: Ref) => ({ jobId, stepName });

/** The calls of the table, each from a ref to the step. */
const calls: Record<string, (r: Ref) => Promise<unknown>> = {
  "complete, no guard": (r) => JobStepRepo.complete(t.db, unguarded(r), { ok: 1 }),
  "complete, guard": (r) => JobStepRepo.complete(t.db, r, { ok: 1 }),
  "fail, no guard": (r) => JobStepRepo.fail(t.db, unguarded(r), "boom"),
  "fail, guard": (r) => JobStepRepo.fail(t.db, r, "boom"),
  "markCompleted, no guard": (r) => JobStepRepo.markCompleted(t.db, r.jobId, r.stepName),
  "markCompleted, guard": (r) => JobStepRepo.markCompleted(t.db, r.jobId, r.stepName, null, r),
  "markFailed, no guard": (r) => JobStepRepo.markFailed(t.db, r.jobId, r.stepName, "boom"),
  "markFailed, guard": (r) => JobStepRepo.markFailed(t.db, r.jobId, r.stepName, "boom", r),
  "reportMany completed, no guard": async (r) => {
    const [out] = await JobStepRepo.reportMany(t.db, [{ ...unguarded(r), outcome: "completed" }]);
    if (out && !out.ok) throw out.error;
  },
  "reportMany failed, guard": async (r) => {
    const [out] = await JobStepRepo.reportMany(t.db, [{ ...r, outcome: "failed", error: "boom" }]);
    if (out && !out.ok) throw out.error;
  },
  markSkipped: (r) => JobStepRepo.markSkipped(t.db, r.jobId, r.stepName),
  markRunning: (r) => JobStepRepo.markRunning(t.db, r.jobId, r.stepName, r.workerId),
  // Without a cancel request (test/cancel.test.ts has the allowed cell: running, its job cancelled).
  "markCancelled, no cancel requested": (r) => JobStepRepo.markCancelled(t.db, r),
  "markCancelled, cancel requested": async (r) => {
    // What JobRepo.cancel leaves on a running step, set on the step whatever its status.
    await setStepState(r.jobId, r.stepName, sql`cancel_requested_at = now()`);
    await JobStepRepo.markCancelled(t.db, r);
  },
  "fail, guard, retries left": async (r) => {
    await withRetries(r);
    await JobStepRepo.fail(t.db, r, "boom");
  },
  "fail, no guard, retries left": async (r) => {
    await withRetries(r);
    await JobStepRepo.fail(t.db, unguarded(r), "boom");
  },
};

/** The step as if created with `maxRetries: 1`: its definition's policy and its state's budget. */
const withRetries = async (r: Ref) => {
  await t.db.execute(sql`update job_step set max_retries = 1 where job_id = ${r.jobId} and step_name = ${r.stepName}`);
  await setStepState(r.jobId, r.stepName, sql`max_retries = 1`);
};

/**
 * from status -> call -> the status it leads to (absent: refused). A guarded
 * call from the terminal status its own outcome leads to is the same report
 * repeated (a retry whose first reply was lost): accepted, nothing written.
 */
const allowed: Record<string, Partial<Record<StepStatus, StepStatus>>> = {
  "complete, no guard": { pending: "completed", ready: "completed", running: "completed", suspended: "completed" },
  "complete, guard": { running: "completed", completed: "completed" },
  "fail, no guard": { pending: "failed", ready: "failed", running: "failed", suspended: "failed" },
  "fail, guard": { running: "failed", failed: "failed" },
  "markCompleted, no guard": { pending: "completed", ready: "completed", running: "completed", suspended: "completed" },
  "markCompleted, guard": { running: "completed", completed: "completed" },
  "markFailed, no guard": { pending: "failed", ready: "failed", running: "failed", suspended: "failed" },
  "markFailed, guard": { running: "failed", failed: "failed" },
  "reportMany completed, no guard": {
    pending: "completed",
    ready: "completed",
    running: "completed",
    suspended: "completed",
  },
  "reportMany failed, guard": { running: "failed", failed: "failed" },
  markSkipped: { pending: "skipped", ready: "skipped" },
  markRunning: { ready: "running" },
  "markCancelled, no cancel requested": { cancelled: "cancelled" },
  // From cancelled: this worker's own cancel of this attempt, repeated (a no-op).
  "markCancelled, cancel requested": { running: "cancelled", cancelled: "cancelled" },
  "fail, guard, retries left": { running: "ready", failed: "failed" },
  // A suspended gate never ran: no retry.
  "fail, no guard, retries left": { pending: "failed", ready: "failed", running: "ready", suspended: "failed" },
};

/** Guarded calls: refused with `StepOwnershipError` from a status the guard's claim never held. */
const guarded = new Set(Object.keys(calls).filter((n) => / guard|markCancelled/.test(n) && !/no guard/.test(n)));
const notClaimed: readonly StepStatus[] = ["pending", "ready", "suspended"];

/** Calls that succeed whatever the step's status and leave the others unchanged. */
const unrefused: Record<string, Partial<Record<StepStatus, StepStatus>>> = {
  "JobRepo.cancel (its job)": { pending: "cancelled", ready: "cancelled", suspended: "cancelled", running: "running" },
};

calls["JobRepo.cancel (its job)"] = (r) => JobRepo.cancel(t.db, r.jobId);

async function statusOf(jobId: string, stepName: string) {
  const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
  return steps.find((s) => s.stepName === stepName)?.status;
}

describe("the step state machine, every cell", () => {
  for (const [name, call] of Object.entries(calls)) {
    it(name, async () => {
      for (const from of STEP_STATUSES) {
        const ref = await stepIn(from);
        const to = allowed[name]?.[from] ?? unrefused[name]?.[from] ?? (unrefused[name] ? from : undefined);
        if (to) {
          await call(ref);
          expect([from, await statusOf(ref.jobId, "t")]).toEqual([from, to]);
        } else {
          const error = await errorOf(() => call(ref));
          const expected = guarded.has(name) && notClaimed.includes(from) ? StepOwnershipError : InvalidTransitionError;
          expect([from, error]).toEqual([from, expect.any(expected)]);
          expect([from, await statusOf(ref.jobId, "t")]).toEqual([from, from]);
        }
      }
    });
  }
});

describe("the job state machine, every cell", () => {
  const jobCalls: Record<string, (jobId: string, workerId: string) => Promise<unknown>> = {
    cancel: (jobId) => JobRepo.cancel(t.db, jobId),
    markRunning: (jobId, workerId) => JobRepo.markRunning(t.db, jobId, workerId),
    markCompleted: (jobId) => JobRepo.markCompleted(t.db, jobId),
    markFailed: (jobId) => JobRepo.markFailed(t.db, jobId),
  };
  const jobAllowed: Record<string, Partial<Record<JobStatus, JobStatus>>> = {
    cancel: { pending: "cancelled", running: "cancelled", cancelled: "cancelled" }, // the last: a no-op
    markRunning: { pending: "running" },
    markCompleted: { pending: "completed", running: "completed" },
    markFailed: { pending: "failed", running: "failed" },
  };
  for (const [name, call] of Object.entries(jobCalls)) {
    it(name, async () => {
      for (const from of JOB_STATUSES) {
        const jobId = await JobRepo.create(t.db, newJob);
        const workerId = await registerWorker(t.db);
        if (from !== "pending") {
          // A job without steps has a job_live row; updated to a finished
          // status it moves to job_result (trigger job_live_ended).
          await t.db.execute(sql`update job_live set status = ${from}, started_at = now(),
            completed_at = case when ${from} = 'running' then null else now() end where job_id = ${jobId}`);
          expect((await JobRepo.get(t.db, jobId))?.status).toBe(from);
        }
        const to = jobAllowed[name]?.[from];
        if (to) {
          await call(jobId, workerId);
          expect([from, (await JobRepo.get(t.db, jobId))?.status]).toEqual([from, to]);
        } else {
          expect([from, await errorOf(() => call(jobId, workerId))]).toEqual([
            from,
            expect.any(InvalidTransitionError),
          ]);
          expect([from, (await JobRepo.get(t.db, jobId))?.status]).toEqual([from, from]);
        }
      }
    });
  }
});

describe("server-side reports", () => {
  const chain: NewFlowStep[] = [
    { stepName: "a", actionName: "x", actionType: "shell" },
    { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
    { stepName: "cleanup", actionName: "x", actionType: "shell", dependsOn: ["b"], continueOnFailure: true },
  ];

  it("complete without a guard finishes a ready step no worker ran, starts and advances its job", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, chain);
    expect(await JobStepRepo.complete(t.db, { jobId, stepName: "a" }, { by: "server" })).toMatchObject({
      promoted: ["b"],
      skipped: [],
      jobStatus: "running",
    });
    const [a] = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(a).toMatchObject({ status: "completed", output: { by: "server" }, workerId: null, attempts: 0 });
    expect((await JobRepo.get(t.db, jobId))?.startedAt).toBeInstanceOf(Date);
  });

  it("markSkipped: its dependants see a skipped dependency; the job settles", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, chain);
    await JobStepRepo.complete(t.db, { jobId, stepName: "a" });
    expect(await JobStepRepo.markSkipped(t.db, jobId, "b")).toEqual({
      promoted: ["cleanup"],
      skipped: [],
      jobStatus: "running",
    });
    await JobStepRepo.complete(t.db, { jobId, stepName: "cleanup" });
    expect(await JobRepo.get(t.db, jobId)).toMatchObject({ status: "completed", stepsUnfinished: 0 });

    // A pending step skipped: its own dependencies finishing later leave it alone.
    const other = await JobRepo.createWithSteps(t.db, newJob, [
      ...chain.slice(0, 2),
      { stepName: "c", actionName: "x", actionType: "shell", dependsOn: ["b"] },
    ]);
    expect(await JobStepRepo.markSkipped(t.db, other, "b")).toEqual({
      promoted: [],
      skipped: ["c"],
      jobStatus: "running",
    });
    expect(await JobStepRepo.complete(t.db, { jobId: other, stepName: "a" })).toMatchObject({
      promoted: [],
      jobStatus: "completed",
    });
  });

  it("markSkipped refuses bad input and unknown steps, writing nothing", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, chain);
    expect(await errorOf(() => JobStepRepo.markSkipped(t.db, "nope", "a"))).toMatchObject({
      name: "InvalidInputError",
      field: "jobId",
    });
    expect(await errorOf(() => JobStepRepo.markSkipped(t.db, jobId, ""))).toBeInstanceOf(InvalidInputError);
    expect(await errorOf(() => JobStepRepo.markSkipped(t.db, jobId, "zz"))).toBeInstanceOf(StepNotFoundError);
    expect((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => s.status)).toEqual([
      "ready",
      "pending",
      "pending",
    ]);
  });
});
