import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeAll, describe, expect, it, onTestFinished } from "vitest";
import {
  type Executor,
  InvalidInputError,
  InvalidTransitionError,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  StepNotFoundError,
  WorkerRepo,
} from "../src/index.js";
import { deferred, errorOf, lockWaiters, registerWorker, waitFor } from "./helpers.js";

/**
 * Approval gates (`src/steps/gates.ts`, `packages/schema/sql/45_gates.sql`):
 * a server step suspended until a person approves or rejects it, its
 * timeout, its job's cancel, and the races between them, against a real
 * PostgreSQL.
 */
const t = useTestDb();
let workerId: string;

beforeAll(async () => {
  workerId = await registerWorker(t.db, ["shell"]);
});

/** build -> approve (a gate, optionally timed) -> deploy. */
async function gated(options: { timeoutSecs?: number; continueOnFailure?: boolean } = {}) {
  const jobId = await JobRepo.createWithSteps(t.db, { taskName: "release", sourceType: "api" }, [
    { stepName: "build", actionName: "make", actionType: "shell" },
    {
      stepName: "approve",
      actionName: "sign-off",
      actionType: "approval",
      dependsOn: ["build"],
      ...(options.timeoutSecs ? { timeoutSecs: options.timeoutSecs } : {}),
      ...(options.continueOnFailure ? { continueOnFailure: true } : {}),
    },
    { stepName: "deploy", actionName: "ship", actionType: "shell", dependsOn: ["approve"] },
  ]);
  await JobStepRepo.markRunning(t.db, jobId, "build", workerId);
  const done = await JobStepRepo.complete(t.db, { jobId, stepName: "build" });
  return { jobId, promoted: done.promoted };
}

const gate = (jobId: string) => ({ jobId, stepName: "approve" });

async function step(jobId: string, stepName: string) {
  return (await JobStepRepo.getStepsForJob(t.db, jobId)).find((s) => s.stepName === stepName);
}

async function counts() {
  const { rows } = await t.db.execute<{ events: number; changed: number }>(sql`select
    (select count(*)::int from audit_event) as events,
    (select count(*)::int from job_step_state where status <> 'pending') as changed`);
  return rows[0];
}

describe("a gate's life", () => {
  it("ready when its dependencies are done, found by the server, suspended, approved: its job goes on", async () => {
    const { jobId, promoted } = await gated();
    // The report that made it ready names it; so does the server's own read.
    expect(promoted).toEqual(["approve"]);
    expect((await JobStepRepo.readyServerSteps(t.db)).map((s) => [s.jobId, s.stepName])).toContainEqual([
      jobId,
      "approve",
    ]);
    // No worker claims it.
    expect(await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 100)).toEqual([]);

    const suspended = await JobStepRepo.suspend(t.db, gate(jobId), { output: { message: "ship 1.2.3?" } });
    expect(suspended.repeated).toBe(false);
    expect(await step(jobId, "approve")).toMatchObject({
      status: "suspended",
      suspendedAt: suspended.suspendedAt,
      output: { message: "ship 1.2.3?" },
      workerId: null,
    });
    expect((await JobStepRepo.readyServerSteps(t.db)).map((s) => s.jobId)).not.toContain(jobId);
    // A second suspend (a server retrying after a lost reply) writes nothing.
    expect((await JobStepRepo.suspend(t.db, gate(jobId))).repeated).toBe(true);

    const decided = await JobStepRepo.approve(t.db, gate(jobId), { by: "ana@example.com", input: { ticket: 42 } });
    expect(decided).toMatchObject({ promoted: ["deploy"], skipped: [], jobStatus: "running" });
    const row = await step(jobId, "approve");
    expect(row).toMatchObject({ status: "completed", errorMessage: null });
    expect(row?.output).toMatchObject({
      message: "ship 1.2.3?",
      approvedBy: "ana@example.com",
      input: { ticket: 42 },
      approved: true,
    });
    expect(typeof (row?.output as { decidedAt?: unknown } | undefined)?.decidedAt).toBe("string");
    await JobStepRepo.markRunning(t.db, jobId, "deploy", workerId);
    await JobStepRepo.complete(t.db, { jobId, stepName: "deploy" });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("completed");

    const { rows } = await t.db.execute<{ action: string; actor_type: string; actor_id: string | null }>(sql`
      select action, actor_type, actor_id from audit_event
      where entity_id = ${jobId} and action like 'step.%' order by id`);
    expect(rows).toEqual([
      { action: "step.suspended", actor_type: "system", actor_id: null },
      { action: "step.approved", actor_type: "user", actor_id: "ana@example.com" },
    ]);
  });

  it("rejected: it fails with the reason, and its job fails (not with continueOnFailure on the gate)", async () => {
    const { jobId } = await gated();
    await JobStepRepo.suspend(t.db, gate(jobId));
    const decided = await JobStepRepo.reject(t.db, gate(jobId), { by: "bo", reason: "not during the freeze" });
    expect(decided).toMatchObject({ skipped: ["deploy"], jobStatus: "failed" });
    expect(await step(jobId, "approve")).toMatchObject({
      status: "failed",
      errorMessage: "not during the freeze",
      attempts: 0,
      output: { rejectedBy: "bo", approved: false },
    });
    const { rows } = await t.db.execute<{ details: Record<string, unknown> }>(
      sql`select details from audit_event where entity_id = ${jobId} and action = 'step.rejected'`,
    );
    expect(rows[0]?.details).toMatchObject({ stepName: "approve", reason: "not during the freeze" });

    const tolerant = await gated({ continueOnFailure: true });
    await JobStepRepo.suspend(t.db, gate(tolerant.jobId));
    const past = await JobStepRepo.reject(t.db, gate(tolerant.jobId), { by: "bo" });
    // Its failure does not fail the job; its dependant, which needs it, is skipped.
    expect(past).toMatchObject({ promoted: [], skipped: ["deploy"], jobStatus: "completed" });
    expect((await step(tolerant.jobId, "approve"))?.errorMessage).toBe("rejected by bo");
  });

  it("times out: the sweep rejects a gate that waited past its timeoutSecs, once", async () => {
    const { jobId } = await gated({ timeoutSecs: 60 });
    await JobStepRepo.suspend(t.db, gate(jobId));
    expect((await JobStepRepo.sweepTimeouts(t.db)).gates).toEqual([]);
    await t.db.execute(sql`update step_live set suspended_at = now() - interval '61 seconds'
      where job_id = ${jobId} and step_name = 'approve'`);
    const swept = await JobStepRepo.sweepTimeouts(t.db);
    expect(swept.gates).toEqual([{ jobId, stepName: "approve" }]);
    expect(await step(jobId, "approve")).toMatchObject({
      status: "failed",
      errorMessage: "timed out: suspended for more than 60 s without a decision (timeoutSecs)",
      output: { timedOut: true, approved: false },
    });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("failed");
    expect((await JobStepRepo.sweepTimeouts(t.db)).gates).toEqual([]);
    const { rows } = await t.db.execute<{ details: Record<string, unknown> }>(
      sql`select details from audit_event where entity_id = ${jobId} and action = 'step.timed_out'`,
    );
    expect(rows.map((r) => r.details)).toEqual([{ stepName: "approve", outcome: "failed", suspended: true }]);
    // Decided already: a late approval is refused.
    const late = await errorOf(() => JobStepRepo.approve(t.db, gate(jobId), { by: "ana" }));
    expect(late).toBeInstanceOf(InvalidTransitionError);
    expect(late).toMatchObject({ currentStatus: "failed", requestedStatus: "completed" });
  });

  it("is cancelled with its job (suspended or not yet), and a late decision is refused", async () => {
    const { jobId } = await gated();
    await JobStepRepo.suspend(t.db, gate(jobId));
    const cancel = await JobRepo.cancel(t.db, jobId, { reason: "superseded" });
    expect(cancel.cancelled).toEqual(["approve", "deploy"]);
    expect(await step(jobId, "approve")).toMatchObject({ status: "cancelled" });
    expect(await errorOf(() => JobStepRepo.reject(t.db, gate(jobId), { by: "bo" }))).toMatchObject({
      name: "InvalidTransitionError",
      currentStatus: "cancelled",
    });
    // Ready, not suspended yet: suspend of a cancelled job's step is refused.
    const other = await gated();
    await JobRepo.cancel(t.db, other.jobId);
    expect(await errorOf(() => JobStepRepo.suspend(t.db, gate(other.jobId)))).toBeInstanceOf(InvalidTransitionError);
  });
});

describe("refused, writing nothing", () => {
  it("a second decision, a decision before the suspend, a worker's step, a worker's claim or capability", async () => {
    const { jobId } = await gated();
    const before = await counts();
    expect(await errorOf(() => JobStepRepo.approve(t.db, gate(jobId), { by: "ana" }))).toMatchObject({
      name: "InvalidTransitionError",
      currentStatus: "ready",
    });
    expect(await errorOf(() => JobStepRepo.suspend(t.db, { jobId, stepName: "deploy" }))).toBeInstanceOf(
      InvalidInputError,
    );
    expect(await errorOf(() => JobStepRepo.markRunning(t.db, jobId, "approve", workerId))).toBeInstanceOf(
      InvalidInputError,
    );
    expect(
      await errorOf(() =>
        WorkerRepo.register(t.db, {
          workerId: "0190f3c2-0000-7000-8000-00000000abcd",
          name: "x",
          capabilities: ["approval" as "shell"],
        }),
      ),
    ).toBeInstanceOf(InvalidInputError);
    expect(
      await errorOf(() => JobStepRepo.claimReadySteps(t.db, ["approval" as "shell"], workerId, 10)),
    ).toBeInstanceOf(InvalidInputError);
    expect(await counts()).toEqual(before);

    await JobStepRepo.suspend(t.db, gate(jobId));
    await JobStepRepo.approve(t.db, gate(jobId), { by: "ana" });
    const after = await counts();
    for (const again of [
      () => JobStepRepo.approve(t.db, gate(jobId), { by: "ana" }),
      () => JobStepRepo.reject(t.db, gate(jobId), { by: "bo" }),
      () => JobStepRepo.suspend(t.db, gate(jobId)),
    ]) {
      expect(await errorOf(again)).toMatchObject({ name: "InvalidTransitionError", currentStatus: "completed" });
    }
    expect(await errorOf(() => JobStepRepo.approve(t.db, gate(jobId), { by: "" }))).toBeInstanceOf(InvalidInputError);
    expect(await errorOf(() => JobStepRepo.approve(t.db, { jobId, stepName: "nope" }, { by: "ana" }))).toBeInstanceOf(
      StepNotFoundError,
    );
    expect(
      await errorOf(() =>
        JobStepRepo.approve(t.db, { jobId: "0190f3c2-0000-7000-8000-000000000000", stepName: "approve" }, { by: "a" }),
      ),
    ).toBeInstanceOf(JobNotFoundError);
    expect(await counts()).toEqual(after);
  });
});

describe("races: the first decision wins, the other is refused", () => {
  it("an approval and its job's cancel at once: the approval stands, the cancel ends the rest", async () => {
    const { jobId } = await gated();
    await JobStepRepo.suspend(t.db, gate(jobId));
    const [approved, cancelled] = await Promise.all([
      JobStepRepo.approve(t.db, gate(jobId), { by: "ana" }).then(
        () => "approved",
        (e: Error) => e.name,
      ),
      JobRepo.cancel(t.db, jobId).then(
        (r) => r.cancelled,
        (e: Error) => e.name,
      ),
    ]);
    const status = (await step(jobId, "approve"))?.status;
    // Whichever took the job's lock first decided the gate; the job ends cancelled either way.
    if (status === "completed") {
      expect([approved, cancelled]).toEqual(["approved", ["deploy"]]);
    } else {
      expect(status).toBe("cancelled");
      expect([approved, cancelled]).toEqual(["InvalidTransitionError", ["approve", "deploy"]]);
    }
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("cancelled");
  });

  /** A second connection, outside the test's pool (through the pooler when the run uses one). */
  function other() {
    const db = t.openPool({ max: 2 });
    return { db, pool: db.$client };
  }

  it.each([
    ["approve", "timeout"],
    ["timeout", "approve"],
    ["approve", "reject"],
    ["reject", "approve"],
    ["cancel", "approve"],
    ["cancel", "reject"],
  ] as const)("%s first, then %s (waiting on the job's lock)", async (firstKind, secondKind) => {
    const { jobId } = await gated({ timeoutSecs: 60 });
    await JobStepRepo.suspend(t.db, gate(jobId));
    await t.db.execute(sql`update step_live set suspended_at = now() - interval '61 seconds'
      where job_id = ${jobId} and step_name = 'approve'`);
    const second = other();
    const act = (kind: "approve" | "reject" | "timeout" | "cancel", db: Executor) => {
      if (kind === "approve") return JobStepRepo.approve(db, gate(jobId), { by: "ana" });
      if (kind === "reject") return JobStepRepo.reject(db, gate(jobId), { by: "bo" });
      if (kind === "cancel") return JobRepo.cancel(db, jobId, { reason: "superseded" });
      return JobStepRepo.sweepTimeouts(db);
    };
    const holding = deferred();
    const release = deferred();
    const first = t.db.transaction(async (tx) => {
      await act(firstKind, tx);
      holding.resolve();
      await release.promise;
    });
    await holding.promise;
    // Whatever fails below, the first transaction ends and the second pool closes
    // (else the file's clean-up waits for them).
    onTestFinished(async () => {
      release.resolve();
      await first.catch(() => undefined);
      await second.pool.end();
    });
    const late = act(secondKind, second.db).then(
      (answer) => ({ answer, error: undefined }),
      (error: Error) => ({ answer: undefined, error }),
    );
    if (secondKind === "timeout") {
      // The sweep skips a job whose lock another transaction holds, at once: no gate timed out.
      expect(await late).toEqual({ answer: { steps: [], gates: [], jobs: [], children: [] }, error: undefined });
      release.resolve();
      await first;
    } else {
      // A decision waits on the job's lock the first one holds, then finds the step decided.
      await waitFor(async () => (await lockWaiters(second.db)) === 1);
      release.resolve();
      await first;
      expect((await late).error).toBeInstanceOf(InvalidTransitionError);
    }
    const expected = { approve: "completed", reject: "failed", timeout: "failed", cancel: "cancelled" }[firstKind];
    expect((await step(jobId, "approve"))?.status).toBe(expected);
    const { rows } = await t.db.execute<{ n: number }>(sql`select count(*)::int as n from audit_event
      where entity_id = ${jobId} and action in ('step.approved', 'step.rejected', 'step.timed_out')`);
    expect(rows[0]?.n).toBe(firstKind === "cancel" ? 0 : 1);
  });
});
