import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeAll, describe, expect, it, onTestFinished } from "vitest";
import {
  InvalidInputError,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  LineageError,
  StepNotFoundError,
} from "../src/index.js";
import { deferred, errorOf, lockWaiters, registerWorker, waitFor } from "./helpers.js";

/**
 * Jobs made from jobs: reruns, restarts from a step, job-level retries
 * (`src/lineage.ts`), against a real PostgreSQL: what each copies, what it
 * refuses (writing nothing), the retry race between two connections.
 */
const t = useTestDb();
let workerId: string;

beforeAll(async () => {
  workerId = await registerWorker(t.db);
});

/** A diamond a -> b, c -> d with inputs and a retry policy on b. */
function diamond(taskName = "deploy") {
  return JobRepo.createWithSteps(
    t.db,
    { workspace: "ops", taskName, sourceType: "api", input: { env: "prod" }, revision: "abc123", timeoutSecs: 600 },
    [
      { stepName: "a", actionName: "checkout", actionType: "shell", actionSpec: { cmd: "git clone" } },
      { stepName: "b", actionName: "build", actionType: "docker", dependsOn: ["a"], maxRetries: 2, input: { x: 1 } },
      { stepName: "c", actionName: "lint", actionType: "shell", dependsOn: ["a"], timeoutSecs: 60 },
      { stepName: "d", actionName: "ship", actionType: "shell", dependsOn: ["b", "c"] },
    ],
  );
}

/** Runs the named step of the job: a directed claim, then its outcome. */
async function run(jobId: string, stepName: string, outcome: "completed" | "failed" = "completed") {
  await JobStepRepo.markRunning(t.db, jobId, stepName, workerId);
  if (outcome === "completed") await JobStepRepo.complete(t.db, { jobId, stepName }, { from: stepName });
  else await JobStepRepo.fail(t.db, { jobId, stepName }, `${stepName} broke`);
}

async function steps(jobId: string) {
  const rows = await JobStepRepo.getStepsForJob(t.db, jobId);
  return Object.fromEntries(rows.map((s) => [s.stepName, s]));
}

async function counts() {
  const { rows } = await t.db.execute<{ jobs: number; steps: number; events: number }>(sql`select
    (select count(*)::int from job) as jobs, (select count(*)::int from job_step) as steps,
    (select count(*)::int from audit_event) as events`);
  return rows[0];
}

describe("rerun", () => {
  it("makes a new job of the same definition and steps, all to run again, linked to its source", async () => {
    const source = await diamond();
    for (const s of ["a", "b", "c", "d"]) await run(source, s);
    const before = await JobRepo.get(t.db, source);
    const jobId = await JobRepo.rerun(t.db, source, { actor: { type: "user", id: "u-1" } });

    const job = await JobRepo.get(t.db, jobId);
    expect(job).toMatchObject({
      workspace: "ops",
      taskName: "deploy",
      input: { env: "prod" },
      revision: "abc123",
      timeoutSecs: 600,
      status: "pending",
      sourceType: "rerun",
      sourceId: source,
      sourceJobId: source,
      restartFromStep: null,
      retryOfJobId: null,
      retryAttempt: 0,
      stepsUnfinished: 4,
    });
    const s = await steps(jobId);
    expect(Object.fromEntries(Object.entries(s).map(([n, r]) => [n, r.status]))).toEqual({
      a: "ready",
      b: "pending",
      c: "pending",
      d: "pending",
    });
    expect(s.b).toMatchObject({ actionType: "docker", input: { x: 1 }, maxRetries: 2, attempts: 0, output: null });
    expect(s.c).toMatchObject({ timeoutSecs: 60, dependsOn: ["a"] });
    expect(s.a).toMatchObject({ actionSpec: { cmd: "git clone" }, dependants: ["b", "c"] });
    // The source is unchanged; the new job is found from it and in the audit log.
    expect(await JobRepo.get(t.db, source)).toEqual(before);
    expect((await JobRepo.madeFrom(t.db, source)).map((j) => j.jobId)).toEqual([jobId]);
    const { rows } = await t.db.execute<{ actor_id: string; details: Record<string, unknown> }>(
      sql`select actor_id, details from audit_event where action = 'job.created' and entity_id = ${jobId}`,
    );
    expect(rows).toEqual([
      {
        actor_id: "u-1",
        details: { workspace: "ops", taskName: "deploy", sourceType: "rerun", steps: 4, sourceJobId: source },
      },
    ]);
    // It runs like any job.
    for (const n of ["a", "b", "c", "d"]) await run(jobId, n);
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("completed");
  });

  it("takes a new input (JSON null too), reruns a job in any status, and refuses an unknown job", async () => {
    const source = await diamond();
    const other = await JobRepo.rerun(t.db, source, { input: { env: "staging" } });
    expect((await JobRepo.get(t.db, other))?.input).toEqual({ env: "staging" });
    const none = await JobRepo.rerun(t.db, source, { input: null });
    expect((await JobRepo.get(t.db, none))?.input).toBeNull();
    expect((await JobRepo.madeFrom(t.db, source)).map((j) => j.jobId)).toEqual([other, none]);
    const before = await counts();
    expect(await errorOf(() => JobRepo.rerun(t.db, "0190f3c2-0000-7000-8000-000000000000"))).toBeInstanceOf(
      JobNotFoundError,
    );
    expect(await errorOf(() => JobRepo.rerun(t.db, "not-a-uuid"))).toBeInstanceOf(InvalidInputError);
    expect(await counts()).toEqual(before);
  });
});

describe("restart from a step", () => {
  it("copies the steps upstream of it completed, with their outputs and times, and runs the rest again", async () => {
    const source = await diamond();
    await run(source, "a");
    await run(source, "b");
    await run(source, "c", "failed");
    const old = await steps(source);
    expect((await JobRepo.get(t.db, source))?.status).toBe("failed");

    // From c: only a is upstream; b and d (and c) run again.
    const jobId = await JobRepo.restart(t.db, source, { fromStep: "c" });
    expect(await JobRepo.get(t.db, jobId)).toMatchObject({
      sourceType: "restart",
      sourceJobId: source,
      restartFromStep: "c",
      status: "pending",
      stepsUnfinished: 3,
    });
    const s = await steps(jobId);
    expect(s.a).toMatchObject({
      status: "completed",
      output: { from: "a" },
      startedAt: old.a?.startedAt,
      completedAt: old.a?.completedAt,
      propagated: true,
    });
    expect(s.b).toMatchObject({ status: "ready", output: null, depsUnfinished: 0, depsCompleted: 1 });
    expect(s.c).toMatchObject({ status: "ready", output: null, errorMessage: null, attempts: 0 });
    expect(s.d).toMatchObject({ status: "pending", depsUnfinished: 2 });
    await run(jobId, "b");
    await run(jobId, "c");
    await run(jobId, "d");
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("completed");
    expect((await steps(source)).c?.status).toBe("failed");
  });

  it("from the join: every upstream step copied, the join ready at once", async () => {
    const source = await diamond();
    for (const s of ["a", "b", "c"]) await run(source, s);
    await run(source, "d", "failed");
    const jobId = await JobRepo.restart(t.db, source, { fromStep: "d" });
    const s = await steps(jobId);
    expect([s.a?.status, s.b?.status, s.c?.status, s.d?.status]).toEqual([
      "completed",
      "completed",
      "completed",
      "ready",
    ]);
    expect((await JobRepo.get(t.db, jobId))?.stepsUnfinished).toBe(1);
    await run(jobId, "d");
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("completed");
  });

  it("refuses, writing nothing: an unknown step, an upstream step that did not complete, a bad argument", async () => {
    const source = await diamond();
    await run(source, "a");
    await run(source, "b", "failed");
    await run(source, "b", "failed");
    await run(source, "b", "failed");
    expect((await steps(source)).b?.status).toBe("failed");
    const before = await counts();
    expect(await errorOf(() => JobRepo.restart(t.db, source, { fromStep: "zed" }))).toBeInstanceOf(StepNotFoundError);
    const upstream = await errorOf(() => JobRepo.restart(t.db, source, { fromStep: "d" }));
    expect(upstream).toBeInstanceOf(LineageError);
    expect(upstream).toMatchObject({ reason: "upstream_not_completed", details: { stepName: "d", steps: ["b", "c"] } });
    expect(
      await errorOf(() => JobRepo.restart(t.db, source, undefined as unknown as { fromStep: string })),
    ).toBeInstanceOf(InvalidInputError);
    expect(await errorOf(() => JobRepo.restart(t.db, source, { fromStep: "" }))).toBeInstanceOf(InvalidInputError);
    expect(await counts()).toEqual(before);
    // From b itself (its upstream, a, completed): allowed.
    const jobId = await JobRepo.restart(t.db, source, { fromStep: "b" });
    expect((await steps(jobId)).b?.status).toBe("ready");
  });
});

describe("job-level retry", () => {
  it("links the attempts: the chain's first job, the attempt number, the source's retryJobId", async () => {
    const first = await diamond("flaky");
    await run(first, "a", "failed");
    const second = await JobRepo.retry(t.db, first, { actor: { type: "system", id: "retry-policy" } });
    expect(await JobRepo.get(t.db, second)).toMatchObject({
      sourceType: "retry",
      sourceId: first,
      sourceJobId: first,
      retryOfJobId: first,
      retryAttempt: 1,
      retryJobId: null,
      status: "pending",
    });
    expect((await JobRepo.get(t.db, first))?.retryJobId).toBe(second);
    await run(second, "a", "failed");
    const third = await JobRepo.retry(t.db, second);
    expect(await JobRepo.get(t.db, third)).toMatchObject({ retryOfJobId: first, retryAttempt: 2, sourceJobId: second });
    for (const id of [first, second, third]) {
      expect((await JobRepo.attempts(t.db, id)).map((j) => [j.jobId, j.retryAttempt])).toEqual([
        [first, 0],
        [second, 1],
        [third, 2],
      ]);
    }
    const { rows } = await t.db.execute<{ details: Record<string, unknown> }>(
      sql`select details from audit_event where action = 'job.created' and entity_id = ${third}`,
    );
    expect(rows[0]?.details).toMatchObject({ sourceType: "retry", retryOfJobId: first, retryAttempt: 2 });
  });

  it("refuses, writing nothing: a job not failed, a job retried already", async () => {
    const done = await diamond();
    for (const s of ["a", "b", "c", "d"]) await run(done, s);
    const pending = await diamond();
    const failed = await diamond();
    await run(failed, "a", "failed");
    const retried = await JobRepo.retry(t.db, failed);
    const before = await counts();
    expect(await errorOf(() => JobRepo.retry(t.db, done))).toMatchObject({
      name: "LineageError",
      reason: "not_failed",
      details: { currentStatus: "completed" },
    });
    expect(await errorOf(() => JobRepo.retry(t.db, pending))).toMatchObject({
      reason: "not_failed",
      details: { currentStatus: "pending" },
    });
    expect(await errorOf(() => JobRepo.retry(t.db, failed))).toMatchObject({
      reason: "already_retried",
      details: { retryJobId: retried },
    });
    expect(await errorOf(() => JobRepo.retry(t.db, "0190f3c2-0000-7000-8000-000000000000"))).toBeInstanceOf(
      JobNotFoundError,
    );
    expect(await counts()).toEqual(before);
  });

  describe("two connections retry the same job at once", () => {
    it("one creates the retry; the other waits for its commit and is refused with its id", async () => {
      const failed = await diamond();
      await run(failed, "a", "failed");
      const other = t.openPool({ max: 2 });
      const pool = other.$client;
      const holding = deferred();
      const release = deferred();
      let winner = "";
      const first = t.db.transaction(async (tx) => {
        winner = await JobRepo.retry(tx, failed);
        holding.resolve();
        await release.promise;
      });
      await holding.promise;
      onTestFinished(async () => {
        release.resolve();
        await first.catch(() => undefined);
        await pool.end();
      });
      const second = errorOf(() => JobRepo.retry(other, failed));
      // The second is waiting on the source's row lock, held by the first's open transaction.
      await waitFor(async () => (await lockWaiters(other)) === 1);
      release.resolve();
      await first;
      const error = await second;
      expect(error).toBeInstanceOf(LineageError);
      expect(error).toMatchObject({ reason: "already_retried", details: { retryJobId: winner } });
      expect((await JobRepo.attempts(t.db, failed)).map((j) => j.jobId)).toEqual([failed, winner]);
    });
  });
});

describe("the lineage source types", () => {
  it("are made by rerun, restart and retry only: a create with one is refused, nothing written", async () => {
    const before = await counts();
    for (const sourceType of ["rerun", "restart", "retry"]) {
      const error = await errorOf(() =>
        JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: sourceType as "api" }, [
          { stepName: "s", actionName: "a", actionType: "shell" },
        ]),
      );
      expect(error).toBeInstanceOf(InvalidInputError);
      expect(error).toMatchObject({ field: "sourceType" });
    }
    expect(await counts()).toEqual(before);
  });
});

describe("lineage after the source is gone", () => {
  it("a purged source leaves its reruns and retries, their links set to null", async () => {
    const source = await diamond();
    await run(source, "a", "failed");
    const rerun = await JobRepo.rerun(t.db, source);
    const retry = await JobRepo.retry(t.db, source);
    await t.db.execute(sql`delete from job where job_id = ${source}`);
    expect(await JobRepo.get(t.db, rerun)).toMatchObject({ sourceJobId: null, sourceId: source });
    expect(await JobRepo.get(t.db, retry)).toMatchObject({ sourceJobId: null, retryOfJobId: null, retryAttempt: 1 });
  });
});
