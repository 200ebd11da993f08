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
  type NewFlowStep,
  StepNotFoundError,
} from "../src/index.js";
import { deferred, errorOf, lockWaiters, registerWorker, waitFor } from "./helpers.js";

/**
 * The server's other steps (`src/steps/server.ts`,
 * `packages/schema/sql/47_server_steps.sql`): `when` conditions, child tasks
 * and for_each loops, and the races between their ends and cancels, against
 * a real PostgreSQL.
 */
const t = useTestDb();
let workerId: string;

beforeAll(async () => {
  workerId = await registerWorker(t.db, ["shell"]);
});

const api = { taskName: "t", sourceType: "api" } as const;
const shell = (stepName: string, extra: Record<string, unknown> = {}) => ({
  stepName,
  actionName: "run",
  actionType: "shell" as const,
  ...extra,
});

async function steps(jobId: string) {
  return Object.fromEntries((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => [s.stepName, s]));
}
async function status(jobId: string) {
  return (await JobRepo.get(t.db, jobId))?.status;
}
/** Claims every ready shell step (of any job) and completes those of `jobId` with `output(name)`. */
async function runReady(jobId: string, output: (name: string) => unknown = (n) => `${n} done`) {
  const claimed = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1000);
  const mine = claimed.filter((c) => c.jobId === jobId);
  for (const c of mine) {
    await JobStepRepo.complete(
      t.db,
      { jobId, stepName: c.stepName, workerId, attempt: c.attempts },
      output(c.stepName),
    );
  }
  return mine.map((c) => c.stepName).sort();
}
async function auditCount(jobId?: string) {
  const { rows } = await t.db.execute<{ n: number }>(
    jobId === undefined
      ? sql`select count(*)::int as n from audit_event`
      : sql`select count(*)::int as n from audit_event where entity_id = ${jobId}`,
  );
  return rows[0]?.n ?? 0;
}
/** A second connection, outside the test's pool (through the pooler when the run uses one). */
function other() {
  const db = t.openPool({ max: 2 });
  return { db, pool: db.$client };
}

/**
 * A deterministic race: `first` runs in a transaction held open; `second`
 * starts on another connection and must wait on a lock `first` holds; then
 * `first` commits, and `second`'s answer (or error) is returned. Whatever
 * fails, the transaction ends and the second pool closes.
 */
async function race<T>(first: (db: Executor) => Promise<unknown>, second: (db: Executor) => Promise<T>) {
  const conn = other();
  const holding = deferred();
  const release = deferred();
  const held = t.db.transaction(async (tx) => {
    await first(tx);
    holding.resolve();
    await release.promise;
  });
  await Promise.race([holding.promise, held]);
  onTestFinished(async () => {
    release.resolve();
    await held.catch(() => undefined);
    await conn.pool.end();
  });
  const late = second(conn.db).then(
    (answer) => ({ answer, error: undefined }),
    (error: Error) => ({ answer: undefined, error }),
  );
  await waitFor(async () => (await lockWaiters(conn.db)) === 1);
  release.resolve();
  await held;
  return late;
}

describe("when conditions", () => {
  async function conditional(extra: Record<string, unknown> = {}) {
    return JobRepo.createWithSteps(t.db, api, [
      shell("build"),
      shell("deploy", { dependsOn: ["build"], when: "{{ build.output.ok }}", ...extra }),
      shell("notify", { dependsOn: ["deploy"] }),
      shell("report", { dependsOn: ["deploy"], continueOnFailure: true }),
    ]);
  }

  it("waits for the server once its dependencies are done; released, a worker runs it", async () => {
    const jobId = await conditional();
    await runReady(jobId);
    // No worker takes it: it is ready for the server, which finds it.
    expect(await runReady(jobId)).toEqual([]);
    const server = await JobStepRepo.readyServerSteps(t.db);
    expect(server.find((s) => s.jobId === jobId)).toMatchObject({
      stepName: "deploy",
      status: "ready",
      whenCondition: "{{ build.output.ok }}",
    });
    // The backlog counts it apart: it waits for the server, not for a worker.
    expect((await JobStepRepo.readyBacklog(t.db)).find((b) => b.actionType === "@when")?.ready).toBeGreaterThan(0);
    const decided = await JobStepRepo.decideCondition(t.db, { jobId, stepName: "deploy" }, { run: true });
    expect(decided).toEqual({ promoted: [], skipped: [], jobStatus: "running" });
    expect((await JobStepRepo.readyServerSteps(t.db)).some((s) => s.jobId === jobId)).toBe(false);
    expect(await runReady(jobId)).toEqual(["deploy"]);
    expect(await runReady(jobId)).toEqual(["notify", "report"]);
    expect(await status(jobId)).toBe("completed");
    const { rows } = await t.db.execute<{ details: unknown }>(
      sql`select details from audit_event where entity_id = ${jobId} and action = 'step.condition_decided'`,
    );
    expect(rows.map((r) => r.details)).toEqual([{ stepName: "deploy", run: true }]);
  });

  it("skipped: its dependants are skipped unless they continue on failure, and the job goes on", async () => {
    const jobId = await conditional();
    await runReady(jobId);
    const decided = await JobStepRepo.decideCondition(t.db, { jobId, stepName: "deploy" }, { run: false });
    expect(decided).toEqual({ promoted: ["report"], skipped: ["notify"], jobStatus: "running" });
    const s = await steps(jobId);
    expect([s.deploy?.status, s.notify?.status, s.report?.status]).toEqual(["skipped", "skipped", "ready"]);
    await runReady(jobId);
    expect(await status(jobId)).toBe("completed");
  });

  it("a job of one conditional step ends when it is skipped", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, api, [shell("only", { when: "false" })]);
    expect((await JobStepRepo.readyServerSteps(t.db)).some((s) => s.jobId === jobId)).toBe(true);
    const decided = await JobStepRepo.decideCondition(t.db, { jobId, stepName: "only" }, { run: false });
    expect(decided.jobStatus).toBe("completed");
    expect(await status(jobId)).toBe("completed");
  });

  it("refuses, writing nothing: a second decision, a step not yet ready, one without when, bad input", async () => {
    const jobId = await conditional();
    const ref = { jobId, stepName: "deploy" };
    expect(await errorOf(() => JobStepRepo.decideCondition(t.db, ref, { run: true }))).toBeInstanceOf(
      InvalidTransitionError,
    );
    await runReady(jobId);
    await JobStepRepo.decideCondition(t.db, ref, { run: true });
    const before = await auditCount();
    for (const run of [true, false]) {
      const e = await errorOf(() => JobStepRepo.decideCondition(t.db, ref, { run }));
      expect(e).toBeInstanceOf(InvalidTransitionError);
      expect(e.message).toContain("released already");
    }
    expect(
      await errorOf(() => JobStepRepo.decideCondition(t.db, { jobId, stepName: "build" }, { run: true })),
    ).toBeInstanceOf(InvalidInputError);
    expect(
      await errorOf(() => JobStepRepo.decideCondition(t.db, { jobId, stepName: "nope" }, { run: true })),
    ).toBeInstanceOf(StepNotFoundError);
    const missing = { jobId: "00000000-0000-4000-8000-000000000000", stepName: "deploy" };
    expect(await errorOf(() => JobStepRepo.decideCondition(t.db, missing, { run: true }))).toBeInstanceOf(
      JobNotFoundError,
    );
    expect(
      await errorOf(() => JobStepRepo.decideCondition(t.db, ref, { run: "yes" } as unknown as { run: boolean })),
    ).toBeInstanceOf(InvalidInputError);
    expect(
      await errorOf(() => JobRepo.createWithSteps(t.db, api, [shell("a", { when: "x".repeat(4097) })])),
    ).toBeInstanceOf(InvalidInputError);
    expect(await auditCount()).toBe(before);
    expect((await steps(jobId)).deploy?.status).toBe("ready");
  });
});

describe("child tasks", () => {
  /** prepare -> run (a task step: its child job) -> finish. */
  async function parent(extra: Record<string, unknown> = {}) {
    const jobId = await JobRepo.createWithSteps(t.db, { ...api, taskName: "parent" }, [
      shell("prepare"),
      { stepName: "run", actionName: "child-task", actionType: "task", dependsOn: ["prepare"], ...extra },
      shell("finish", { dependsOn: ["run"] }),
    ]);
    await runReady(jobId);
    return jobId;
  }
  const child = (steps: NewFlowStep[] = [shell("c1"), shell("c2", { dependsOn: ["c1"] })]) => ({
    job: { taskName: "child", sourceType: "api" as const, input: { from: "parent" } },
    steps,
  });

  it("a ready task step starts its child; the child's end ends the step, once, and the parent goes on", async () => {
    const jobId = await parent();
    const ref = { jobId, stepName: "run" };
    expect((await JobStepRepo.readyServerSteps(t.db)).some((s) => s.jobId === jobId && s.stepName === "run")).toBe(
      true,
    );
    const started = await JobStepRepo.startChild(t.db, ref, child());
    expect(started.repeated).toBe(false);
    expect((await steps(jobId)).run).toMatchObject({ status: "suspended" });
    // A second call (a server retrying) answers the same child and writes nothing.
    const events = await auditCount();
    expect(await JobStepRepo.startChild(t.db, ref, child())).toEqual({
      childJobId: started.childJobId,
      repeated: true,
    });
    expect(await auditCount()).toBe(events);
    const kids = await JobRepo.children(t.db, jobId);
    expect(kids.map((k) => [k.jobId, k.parentJobId, k.parentStepName, k.status])).toEqual([
      [started.childJobId, jobId, "run", "pending"],
    ]);
    // The child runs as any job; its last report ends the parent's step.
    expect(await runReady(started.childJobId)).toEqual(["c1"]);
    expect((await steps(jobId)).run?.status).toBe("suspended");
    expect(await runReady(started.childJobId)).toEqual(["c2"]);
    expect(await status(started.childJobId)).toBe("completed");
    expect((await steps(jobId)).run).toMatchObject({
      status: "completed",
      output: { childJobId: started.childJobId, status: "completed", output: null },
    });
    expect((await steps(jobId)).finish?.status).toBe("ready");
    await runReady(jobId);
    expect(await status(jobId)).toBe("completed");
    const { rows } = await t.db.execute<{ action: string }>(
      sql`select action from audit_event where entity_id = ${jobId} order by id`,
    );
    expect(rows.map((r) => r.action)).toEqual(["job.created", "job.child_started"]);
  });

  it("a failed child fails its parent step (and the parent job); a cancelled child too, with its reason", async () => {
    const failing = await parent();
    const a = await JobStepRepo.startChild(t.db, { jobId: failing, stepName: "run" }, child([shell("c1")]));
    const [claimed] = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1);
    expect(claimed?.jobId).toBe(a.childJobId);
    await JobStepRepo.fail(t.db, { jobId: a.childJobId, stepName: "c1", workerId, attempt: 1 }, "boom");
    expect(await status(a.childJobId)).toBe("failed");
    expect((await steps(failing)).run).toMatchObject({ status: "failed" });
    expect((await steps(failing)).run?.errorMessage).toBe(`child job ${a.childJobId} failed`);
    expect(await status(failing)).toBe("failed");

    const cancelled = await parent({ continueOnFailure: true });
    const b = await JobStepRepo.startChild(t.db, { jobId: cancelled, stepName: "run" }, child());
    await JobRepo.cancel(t.db, b.childJobId, { reason: "not needed" });
    expect((await steps(cancelled)).run?.errorMessage).toBe(`child job ${b.childJobId} cancelled: not needed`);
    // The step continues on failure: its failure does not fail the job (its dependant is skipped, as after any failure).
    expect((await steps(cancelled)).finish?.status).toBe("skipped");
    expect(await status(cancelled)).toBe("completed");
  });

  it("a child that times out fails its parent step", async () => {
    const jobId = await parent();
    const c = await JobStepRepo.startChild(
      t.db,
      { jobId, stepName: "run" },
      {
        ...child(),
        job: { ...child().job, timeoutSecs: 60 },
      },
    );
    await t.db.execute(
      sql`update job_deadline set deadline = now() - interval '1 second' where job_id = ${c.childJobId}`,
    );
    const swept = await JobStepRepo.sweepTimeouts(t.db);
    expect(swept.jobs).toContain(c.childJobId);
    expect(await status(c.childJobId)).toBe("failed");
    expect((await steps(jobId)).run?.status).toBe("failed");
    expect(await status(jobId)).toBe("failed");
  });

  it("a task step that waits past its timeout fails, and its orphaned child is cancelled by the same sweep", async () => {
    const jobId = await parent({ timeoutSecs: 60 });
    const c = await JobStepRepo.startChild(t.db, { jobId, stepName: "run" }, child());
    await t.db.execute(
      sql`update step_live set suspended_at = now() - interval '61 seconds' where job_id = ${jobId} and step_name = 'run'`,
    );
    const swept = await JobStepRepo.sweepTimeouts(t.db);
    expect(swept.gates).toEqual([{ jobId, stepName: "run" }]);
    expect(swept.children).toEqual([c.childJobId]);
    expect((await steps(jobId)).run).toMatchObject({
      status: "failed",
      errorMessage: "timed out: waiting for its child job for more than 60 s (timeoutSecs)",
    });
    expect(await JobRepo.get(t.db, c.childJobId)).toMatchObject({
      status: "cancelled",
      cancelReason: `parent step run of job ${jobId} ended without it`,
    });
    expect(await status(jobId)).toBe("failed");
    expect((await JobStepRepo.sweepTimeouts(t.db)).children).toEqual([]);
  });

  it("a parent finished by hand cancels its children first; one left over is the sweep's", async () => {
    const jobId = await parent();
    const c = await JobStepRepo.startChild(t.db, { jobId, stepName: "run" }, child());
    expect((await JobRepo.markFailed(t.db, jobId)).children).toEqual([c.childJobId]);
    expect(await JobRepo.get(t.db, c.childJobId)).toMatchObject({
      status: "cancelled",
      cancelReason: `parent job ${jobId} failed by hand`,
    });
    // The parent's step was closed with its job; the child's cancel left it so.
    expect((await steps(jobId)).run?.status).toBe("cancelled");
    // A child whose parent step ended without it some other way (here: the
    // step closed by SQL) is cancelled by the next sweep.
    const other = await parent();
    const d = await JobStepRepo.startChild(t.db, { jobId: other, stepName: "run" }, child());
    await t.db.execute(sql`update step_live set status = 'cancelled', completed_at = now(), propagated = true
      where job_id = ${other} and step_name = 'run'`);
    expect(await status(d.childJobId)).toBe("pending");
    expect((await JobStepRepo.sweepTimeouts(t.db)).children).toEqual([d.childJobId]);
    expect(await status(d.childJobId)).toBe("cancelled");
  });

  it("cancelling the parent cancels its unfinished children and theirs, deepest first; its step is cancelled", async () => {
    const jobId = await parent();
    const c = await JobStepRepo.startChild(
      t.db,
      { jobId, stepName: "run" },
      child([{ stepName: "nested", actionName: "grandchild", actionType: "task" }]),
    );
    const g = await JobStepRepo.startChild(t.db, { jobId: c.childJobId, stepName: "nested" }, child([shell("g1")]));
    const result = await JobRepo.cancel(t.db, jobId, { reason: "abort" });
    expect(result.children).toEqual([g.childJobId, c.childJobId]);
    expect([await status(jobId), await status(c.childJobId), await status(g.childJobId)]).toEqual([
      "cancelled",
      "cancelled",
      "cancelled",
    ]);
    // The parent's step was cancelled with its job, not failed by its child's cancel.
    expect((await steps(jobId)).run?.status).toBe("cancelled");
    expect((await JobRepo.get(t.db, g.childJobId))?.cancelReason).toBe(`parent job ${jobId} cancelled: abort`);
    const { rows } = await t.db.execute<{ entity_id: string }>(
      sql`select entity_id from audit_event where action = 'job.cancelled' and details->>'parentJobId' = ${jobId}`,
    );
    expect(rows.map((r) => r.entity_id).sort()).toEqual([c.childJobId, g.childJobId].sort());
    // A cancelled parent takes no child.
    expect(await errorOf(() => JobStepRepo.startChild(t.db, { jobId, stepName: "run" }, child()))).toBeInstanceOf(
      InvalidTransitionError,
    );
  });

  it("refuses, writing nothing: another action type, a step not ready, a bad child, an idempotency key", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { ...api, taskName: "parent" }, [
      shell("prepare"),
      { stepName: "run", actionName: "child-task", actionType: "task", dependsOn: ["prepare"] },
    ]);
    const before = await auditCount();
    const ref = { jobId, stepName: "run" };
    expect(await errorOf(() => JobStepRepo.startChild(t.db, ref, child()))).toBeInstanceOf(InvalidTransitionError);
    expect(await errorOf(() => JobStepRepo.startChild(t.db, { jobId, stepName: "prepare" }, child()))).toBeInstanceOf(
      InvalidInputError,
    );
    await runReady(jobId);
    expect(
      await errorOf(() => JobStepRepo.startChild(t.db, ref, child([shell("a", { dependsOn: ["missing"] })]))),
    ).toBeInstanceOf(Error);
    expect(
      await errorOf(() =>
        JobStepRepo.startChild(t.db, ref, { ...child(), job: { ...child().job, idempotencyKey: "k" } }),
      ),
    ).toBeInstanceOf(InvalidInputError);
    expect(await errorOf(() => JobStepRepo.approve(t.db, ref, { by: "ana" }))).toBeInstanceOf(InvalidInputError);
    expect((await steps(jobId)).run?.status).toBe("ready");
    expect(await JobRepo.children(t.db, jobId)).toEqual([]);
    // Only the prepare step's report wrote since: nothing of the refusals.
    expect(await auditCount()).toBe(before);
  });

  it("reportMany locks a child before its parent: no deadlock with a child's end waiting for the parent", async () => {
    // The hazard of job id order: batch B (a step of the parent P, and a stale
    // report of the child C) would lock P and wait for C while A, ending C,
    // holds C and waits for P. B now locks C first. Needs P < C in id order.
    let jobId = "";
    let c = { childJobId: "" };
    for (let i = 0; i < 50 && !(jobId && jobId < c.childJobId); i++) {
      jobId = await JobRepo.createWithSteps(t.db, { ...api, taskName: "parent" }, [
        shell("side"),
        { stepName: "run", actionName: "child-task", actionType: "task" },
      ]);
      c = await JobStepRepo.startChild(t.db, { jobId, stepName: "run" }, { job: api, steps: [shell("c1")] });
    }
    expect(jobId < c.childJobId).toBe(true);
    const claimed = (await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1000)).filter(
      (s) => s.jobId === jobId || s.jobId === c.childJobId,
    );
    expect(claimed.map((s) => s.stepName).sort()).toEqual(["c1", "side"]);
    const deadlocks = async () =>
      Number(
        (
          await t.db.execute<{ n: string }>(
            sql`select deadlocks::text as n from pg_stat_database where datname = current_database()`,
          )
        ).rows[0]?.n,
      );
    const before = await deadlocks();
    // T holds the parent's lock, so that B queues for it before A does. One
    // connection each: their statistics (a deadlock detected) are flushed below.
    const one = () => {
      const db = t.openPool({ max: 1 });
      return { db, pool: db.$client };
    };
    const a = one();
    const b = one();
    const holding = deferred();
    const release = deferred();
    const held = t.db.transaction(async (tx) => {
      await tx.execute(sql`select 1 from job_live where job_id = ${jobId} for no key update`);
      holding.resolve();
      await release.promise;
    });
    await holding.promise;
    onTestFinished(async () => {
      release.resolve();
      await held.catch(() => undefined);
      await a.pool.end();
      await b.pool.end();
    });
    // The statements reportMany and complete run, called directly: the repos
    // retry a deadlock's victim (40P01), which would hide it; here it fails.
    const reports = JSON.stringify([
      { i: 0, job_id: jobId, step_name: "side", outcome: "completed", worker_id: workerId, attempt: 1 },
      // A stale report of the child (never this attempt): refused, but its job is locked with the batch.
      { i: 1, job_id: c.childJobId, step_name: "c1", outcome: "completed", worker_id: workerId, attempt: 9 },
    ]);
    // (A drizzle query runs when awaited: each is started at once here.)
    const batch = (async () =>
      b.db.execute<{ result: string }>(sql`select * from stroem_report_many(${reports}::jsonb)`))();
    await waitFor(async () => (await lockWaiters(t.db)) === 1);
    const end = (async () =>
      a.db.execute<{ result: string; job_status: string }>(
        sql`select * from stroem_finish_step(${c.childJobId}::uuid, 'c1', 'completed', null::jsonb, null::text,
          ${workerId}::uuid, 1, true)`,
      ))();
    await waitFor(async () => (await lockWaiters(t.db)) === 2);
    release.resolve();
    await held;
    const [answers, ended] = await Promise.all([batch, end]);
    // A second witness: the server's count of deadlocks (when its statistics are flushed in time).
    for (const x of [a, b]) await x.db.execute(sql`select pg_stat_force_next_flush()`);
    expect(answers.rows.map((x) => x.result === "ok")).toEqual([true, false]);
    expect(ended.rows[0]).toMatchObject({ result: "ok", job_status: "completed" });
    expect((await steps(jobId)).run?.status).toBe("completed");
    expect(await deadlocks()).toBe(before);
  });

  describe("races: a child's end and its parent's cancel", () => {
    it.each(["child ends first", "parent cancel first"] as const)(
      "%s (the other waits, no deadlock)",
      async (order) => {
        const jobId = await parent();
        const c = await JobStepRepo.startChild(t.db, { jobId, stepName: "run" }, child([shell("c1")]));
        const [claimed] = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1);
        expect(claimed?.jobId).toBe(c.childJobId);
        const end = (db: Executor) =>
          JobStepRepo.complete(db, { jobId: c.childJobId, stepName: "c1", workerId, attempt: 1 }, "ok");
        const cancel = (db: Executor) => JobRepo.cancel(db, jobId, { reason: "stop" });
        const { error } = order === "child ends first" ? await race(end, cancel) : await race(cancel, end);
        expect(error).toBeUndefined();
        const s = await steps(jobId);
        expect(await status(jobId)).toBe("cancelled");
        if (order === "child ends first") {
          // The child completed and ended its parent step; the cancel ended the rest.
          expect(await status(c.childJobId)).toBe("completed");
          expect([s.run?.status, s.finish?.status]).toEqual(["completed", "cancelled"]);
        } else {
          // The cancel came first: the child is cancelled, its late report recorded and moving nothing.
          expect(await status(c.childJobId)).toBe("cancelled");
          expect([s.run?.status, s.finish?.status]).toEqual(["cancelled", "cancelled"]);
        }
      },
    );
  });
});

describe("for_each loops", () => {
  /** list -> each (a loop) -> after. */
  async function looping(extra: Record<string, unknown> = {}) {
    const jobId = await JobRepo.createWithSteps(t.db, api, [
      shell("list"),
      shell("each", { dependsOn: ["list"], forEach: "{{ list.output }}", input: { cmd: "deploy" }, ...extra }),
      shell("after", { dependsOn: ["each"] }),
    ]);
    await runReady(jobId);
    return jobId;
  }
  const each = (jobId: string) => ({ jobId, stepName: "each" });

  it("expands into one instance per item, each claimed on its own; the last completes the loop in index order", async () => {
    const jobId = await looping();
    expect((await JobStepRepo.readyServerSteps(t.db)).find((s) => s.jobId === jobId)?.stepName).toBe("each");
    expect(await runReady(jobId)).toEqual([]);
    const expanded = await JobStepRepo.expandLoop(t.db, each(jobId), ["eu", "us", "ap"]);
    expect(expanded).toMatchObject({ instances: 3, repeated: false, jobStatus: "running" });
    const claimed = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10);
    const mine = claimed.filter((c) => c.jobId === jobId);
    expect(mine.map((c) => [c.stepName, c.loopSource, c.loopIndex, c.loopTotal, c.loopItem, c.input]).sort()).toEqual([
      ["each[0]", "each", 0, 3, "eu", { cmd: "deploy" }],
      ["each[1]", "each", 1, 3, "us", { cmd: "deploy" }],
      ["each[2]", "each", 2, 3, "ap", { cmd: "deploy" }],
    ]);
    // Reported out of order; the loop waits for all three.
    for (const name of ["each[2]", "each[0]"]) {
      const r = await JobStepRepo.complete(t.db, { jobId, stepName: name, workerId, attempt: 1 }, `${name} out`);
      expect(r.promoted).toEqual([]);
      expect((await steps(jobId)).each?.status).toBe("pending");
    }
    const last = await JobStepRepo.complete(t.db, { jobId, stepName: "each[1]", workerId, attempt: 1 }, "each[1] out");
    expect(last.promoted).toEqual(["after"]);
    expect((await steps(jobId)).each).toMatchObject({
      status: "completed",
      output: ["each[0] out", "each[1] out", "each[2] out"],
      loopTotal: 3,
    });
    await runReady(jobId);
    expect(await status(jobId)).toBe("completed");
    // A second expand writes nothing.
    expect(await JobStepRepo.expandLoop(t.db, each(jobId), ["x"])).toMatchObject({ instances: 3, repeated: true });
  });

  it("sequential: instance i+1 becomes ready when i finishes", async () => {
    const jobId = await looping();
    await JobStepRepo.expandLoop(t.db, each(jobId), [1, 2, 3], { sequential: true });
    expect(await runReady(jobId)).toEqual(["each[0]"]);
    expect(await runReady(jobId)).toEqual(["each[1]"]);
    expect(await runReady(jobId)).toEqual(["each[2]"]);
    expect(await runReady(jobId)).toEqual(["after"]);
    expect(await status(jobId)).toBe("completed");
  });

  it("a failed instance fails the loop, naming it; with continueOnFailure the rest run and the job still completes", async () => {
    const strict = await looping();
    await JobStepRepo.expandLoop(t.db, each(strict), ["a", "b"]);
    const claimed = (await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10)).filter(
      (c) => c.jobId === strict,
    );
    await JobStepRepo.fail(t.db, { jobId: strict, stepName: "each[1]", workerId, attempt: 1 }, "no");
    // The usual rule for a failed dependency: the loop fails at once, its dependant is skipped.
    expect((await steps(strict)).each).toMatchObject({
      status: "failed",
      errorMessage: "1 of 2 instances failed: each[1]",
    });
    expect((await steps(strict)).after?.status).toBe("skipped");
    expect(claimed.length).toBe(2);
    await JobStepRepo.complete(t.db, { jobId: strict, stepName: "each[0]", workerId, attempt: 1 }, "fine");
    expect(await status(strict)).toBe("failed");

    const lenient = await looping({ continueOnFailure: true });
    await JobStepRepo.expandLoop(t.db, each(lenient), ["a", "b", "c"], { sequential: true });
    const [first] = (await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10)).filter(
      (c) => c.jobId === lenient,
    );
    expect(first?.stepName).toBe("each[0]");
    await JobStepRepo.fail(t.db, { jobId: lenient, stepName: "each[0]", workerId, attempt: 1 }, "no");
    expect(await runReady(lenient)).toEqual(["each[1]"]);
    expect(await runReady(lenient)).toEqual(["each[2]"]);
    expect((await steps(lenient)).each).toMatchObject({
      status: "failed",
      errorMessage: "1 of 3 instances failed: each[0]",
      output: [null, "each[1] done", "each[2] done"],
    });
    // Its failure does not fail the job; its dependant is skipped, as after any failed dependency.
    expect((await steps(lenient)).after?.status).toBe("skipped");
    expect(await status(lenient)).toBe("completed");
  });

  it("an empty list completes the loop at once; a batch of reports finishes a loop too", async () => {
    const empty = await looping();
    const r = await JobStepRepo.expandLoop(t.db, each(empty), []);
    expect(r).toMatchObject({ instances: 0, promoted: ["after"] });
    expect((await steps(empty)).each).toMatchObject({ status: "completed", output: [] });

    const batch = await looping();
    await JobStepRepo.expandLoop(t.db, each(batch), ["x", "y", "z"]);
    const claimed = (await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10)).filter((c) => c.jobId === batch);
    const answers = await JobStepRepo.reportMany(
      t.db,
      claimed.map((c) => ({
        jobId: batch,
        stepName: c.stepName,
        workerId,
        attempt: 1,
        outcome: "completed" as const,
        output: c.loopItem,
      })),
    );
    expect(answers.every((a) => a.ok)).toBe(true);
    expect(answers.flatMap((a) => (a.ok ? a.promoted : []))).toEqual(["after"]);
    expect((await steps(batch)).each).toMatchObject({ status: "completed", output: ["x", "y", "z"] });
  });

  it("a loop skipped by hand stays skipped; its instances run on and end the job", async () => {
    const jobId = await looping();
    await JobStepRepo.expandLoop(t.db, each(jobId), ["a", "b"]);
    await JobStepRepo.markSkipped(t.db, jobId, "each");
    expect((await steps(jobId)).each?.status).toBe("skipped");
    expect((await steps(jobId)).after?.status).toBe("skipped");
    expect(await runReady(jobId)).toEqual(["each[0]", "each[1]"]);
    expect((await steps(jobId)).each).toMatchObject({ status: "skipped", output: null });
    expect(await status(jobId)).toBe("completed");
  });

  it("refuses, writing nothing: not a loop, not ready, too many or bad items", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, api, [
      shell("list"),
      shell("each", { dependsOn: ["list"], forEach: "items" }),
    ]);
    const before = await auditCount();
    expect(await errorOf(() => JobStepRepo.expandLoop(t.db, each(jobId), [1]))).toBeInstanceOf(InvalidTransitionError);
    expect(await errorOf(() => JobStepRepo.expandLoop(t.db, { jobId, stepName: "list" }, [1]))).toBeInstanceOf(
      InvalidInputError,
    );
    await runReady(jobId);
    const tooMany = Array.from({ length: 10_001 }, (_, i) => i);
    expect(await errorOf(() => JobStepRepo.expandLoop(t.db, each(jobId), tooMany))).toBeInstanceOf(InvalidInputError);
    expect(
      await errorOf(() => JobStepRepo.expandLoop(t.db, each(jobId), "abc" as unknown as unknown[])),
    ).toBeInstanceOf(InvalidInputError);
    expect(await auditCount()).toBe(before + 0);
    expect(Object.keys(await steps(jobId)).sort()).toEqual(["each", "list"]);
  });

  it("10,000 instances in one call; a rerun expands again (instances are not copied)", async () => {
    const jobId = await looping();
    const items = Array.from({ length: 10_000 }, (_, i) => ({ i }));
    expect((await JobStepRepo.expandLoop(t.db, each(jobId), items)).instances).toBe(10_000);
    const { rows } = await t.db.execute<{ n: number }>(
      sql`select count(*)::int as n from step_live where job_id = ${jobId} and status = 'ready'`,
    );
    expect(rows[0]?.n).toBe(10_000);
    expect((await JobRepo.get(t.db, jobId))?.stepsUnfinished).toBe(10_002);
    await JobRepo.cancel(t.db, jobId);
    const rerun = await JobRepo.rerun(t.db, jobId);
    expect(Object.keys(await steps(rerun)).sort()).toEqual(["after", "each", "list"]);
    expect((await steps(rerun)).each?.loopTotal).toBeNull();
  }, 120_000);

  it("a loop of task steps: one child job per item, each ending its instance; the last ends the loop", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, api, [
      shell("list"),
      { stepName: "each", actionName: "per-region", actionType: "task", dependsOn: ["list"], forEach: "regions" },
    ]);
    await runReady(jobId);
    await JobStepRepo.expandLoop(t.db, each(jobId), ["eu", "us"]);
    const ready = (await JobStepRepo.readyServerSteps(t.db)).filter((s) => s.jobId === jobId);
    expect(ready.map((s) => s.stepName).sort()).toEqual(["each[0]", "each[1]"]);
    const kidOf = new Map<string, string>();
    for (const s of ready) {
      const c = await JobStepRepo.startChild(
        t.db,
        { jobId, stepName: s.stepName },
        { job: { taskName: "region", sourceType: "api", input: s.loopItem }, steps: [shell("work")] },
      );
      kidOf.set(s.stepName, c.childJobId);
    }
    const kids = [...kidOf.values()];
    const work = (await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 100)).filter((w) =>
      kids.includes(w.jobId),
    );
    for (const w of work) await JobStepRepo.complete(t.db, { jobId: w.jobId, stepName: "work", workerId, attempt: 1 });
    const loop = (await steps(jobId)).each;
    expect(loop?.status).toBe("completed");
    // Its output: each instance's, in index order (an instance's output names its child).
    expect(((loop?.output ?? []) as Array<{ childJobId: string }>).map((o) => o.childJobId)).toEqual([
      kidOf.get("each[0]"),
      kidOf.get("each[1]"),
    ]);
    expect(await status(jobId)).toBe("completed");
  });

  it("one batch of reports holding a child's last step and its parent's other step", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { ...api, taskName: "parent" }, [
      shell("side"),
      { stepName: "run", actionName: "child-task", actionType: "task" },
      shell("finish", { dependsOn: ["run", "side"] }),
    ]);
    const c = await JobStepRepo.startChild(t.db, { jobId, stepName: "run" }, { job: api, steps: [shell("c1")] });
    const claimed = (await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 100)).filter(
      (s) => s.jobId === jobId || s.jobId === c.childJobId,
    );
    expect(claimed.map((s) => s.stepName).sort()).toEqual(["c1", "side"]);
    const answers = await JobStepRepo.reportMany(
      t.db,
      claimed.map((s) => ({
        jobId: s.jobId,
        stepName: s.stepName,
        workerId,
        attempt: 1,
        outcome: "completed" as const,
      })),
    );
    expect(answers.every((a) => a.ok)).toBe(true);
    expect([await status(c.childJobId), (await steps(jobId)).run?.status, (await steps(jobId)).finish?.status]).toEqual(
      ["completed", "completed", "ready"],
    );
  });

  describe("races", () => {
    it("the last two instances finishing at once complete the loop once", async () => {
      const jobId = await looping();
      await JobStepRepo.expandLoop(t.db, each(jobId), ["a", "b"]);
      await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10);
      const second = other();
      onTestFinished(() => second.pool.end());
      const [a, b] = await Promise.all([
        JobStepRepo.complete(t.db, { jobId, stepName: "each[0]", workerId, attempt: 1 }, "A"),
        JobStepRepo.complete(second.db, { jobId, stepName: "each[1]", workerId, attempt: 1 }, "B"),
      ]);
      expect([...a.promoted, ...b.promoted]).toEqual(["after"]);
      expect((await steps(jobId)).each).toMatchObject({ status: "completed", output: ["A", "B"] });
      const { rows } = await t.db.execute<{ n: number }>(
        sql`select count(*)::int as n from step_result where job_id = ${jobId} and step_name = 'each'`,
      );
      expect(rows[0]?.n).toBe(1);
    });

    it.each(["expand first", "cancel first"] as const)("expand and cancel: %s", async (order) => {
      const jobId = await looping();
      const expand = (db: Executor) => JobStepRepo.expandLoop(db, each(jobId), ["a", "b"]);
      const cancel = (db: Executor) => JobRepo.cancel(db, jobId);
      const { answer, error } =
        order === "expand first" ? await race<unknown>(expand, cancel) : await race<unknown>(cancel, expand);
      const s = await steps(jobId);
      expect(await status(jobId)).toBe("cancelled");
      if (order === "expand first") {
        expect(error).toBeUndefined();
        expect((answer as JobRepo.CancelResult).cancelled).toEqual(["after", "each", "each[0]", "each[1]"]);
        expect(s["each[0]"]?.status).toBe("cancelled");
      } else {
        expect(error).toBeInstanceOf(InvalidTransitionError);
        expect(Object.keys(s).sort()).toEqual(["after", "each", "list"]);
      }
    });
  });
});
