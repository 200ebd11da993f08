import { MAX_RETRIES, RETRY_STRATEGIES, type RetryStrategy, retryDelaySecs } from "@stroem/orchestrator";
import { type NewFlowStep, RETRY_LIMITS, RETRY_STRATEGIES as SCHEMA_STRATEGIES, worker } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import fc from "fast-check";
import { beforeEach, describe, expect, expectTypeOf, it } from "vitest";
import { JobRepo, JobStepRepo } from "../src/index.js";
import { claimStatement } from "../src/internal.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
});

const newJob = { taskName: "t", sourceType: "api" } as const;
const flaky = (policy: Partial<NewFlowStep> = {}): NewFlowStep[] => [
  { stepName: "a", actionName: "x", actionType: "shell", maxRetries: 2, retryBackoffSecs: 60, ...policy },
  { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
];

async function stepA(jobId: string) {
  return (await JobStepRepo.getStepsForJob(t.db, jobId)).find((s) => s.stepName === "a");
}

/** Makes the retried steps of the job due now: the test moves `ready_at` instead of sleeping. */
const makeDue = (jobId: string) =>
  t.db.execute(sql`update step_live set ready_at = now() where job_id = ${jobId} and status = 'ready'`);

/** Seconds between the last retried attempt's failure and the step's `ready_at`. */
function lastDelay(step: Awaited<ReturnType<typeof stepA>>) {
  if (!step?.readyAt) throw new Error("the step is not ready");
  const last = step.retryHistory.at(-1);
  return (step.readyAt.getTime() - Date.parse(last?.failedAt ?? "")) / 1000;
}

/** Seconds between each retried attempt's failure and the `ready_at` it got, per history entry, read in SQL. */
async function delaysOf(jobId: string, readyAts: Date[]) {
  const a = await stepA(jobId);
  return (a?.retryHistory ?? []).map((h, i) => ((readyAts[i] as Date).getTime() - Date.parse(h.failedAt)) / 1000);
}

describe("the retry rule in SQL is the orchestrator's", () => {
  it("stroem_retry_delay equals retryDelaySecs on random policies, attempts and draws", async () => {
    expectTypeOf<RetryStrategy>().toEqualTypeOf<(typeof SCHEMA_STRATEGIES)[number]>();
    expect([...SCHEMA_STRATEGIES]).toEqual([...RETRY_STRATEGIES]);
    expect(RETRY_LIMITS.maxRetries).toBe(MAX_RETRIES);
    const cases = fc.sample(
      fc.record({
        attempt: fc.integer({ min: 1, max: 3000 }),
        retryBackoffSecs: fc.integer({ min: 0, max: RETRY_LIMITS.maxBackoffSecs }),
        retryStrategy: fc.constantFrom(...RETRY_STRATEGIES),
        retryJitter: fc.double({ min: 0, max: 1, noNaN: true }),
        u: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      }),
      { numRuns: 500, seed: 11 },
    );
    const { rows } = await t.db.execute<{ d: number }>(sql`
      select stroem_retry_delay(c.attempt, c.backoff, c.strategy, c.jitter, c.u) as d
      from unnest(${sql.param(cases.map((c) => c.attempt))}::int[], ${sql.param(cases.map((c) => c.retryBackoffSecs))}::int[],
                  ${sql.param(cases.map((c) => c.retryStrategy))}::text[], ${sql.param(cases.map((c) => c.retryJitter))}::float8[],
                  ${sql.param(cases.map((c) => c.u))}::float8[]) with ordinality as c(attempt, backoff, strategy, jitter, u, n)
      order by c.n`);
    expect(rows).toHaveLength(cases.length);
    for (const [i, c] of cases.entries()) {
      const ts = retryDelaySecs({ ...c, maxRetries: 0 }, c.attempt, c.u);
      expect(Math.abs(Number(rows[i]?.d) - ts)).toBeLessThanOrEqual(1e-9 * Math.max(1, ts));
    }
  });
});

describe("fail with retries left", () => {
  it("goes back to ready after the delay with a history entry; the job keeps running; the last failure is final", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flaky({ retryStrategy: "exponential" }));
    const w = await registerWorker(t.db);
    const readyAts: Date[] = [];
    for (const attempt of [1, 2]) {
      const [claimed] = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
      expect(claimed).toMatchObject({ stepName: "a", attempts: attempt });
      const result = await JobStepRepo.fail(t.db, { jobId, stepName: "a", workerId: w, attempt }, `boom ${attempt}`);
      expect(result).toMatchObject({ promoted: [], skipped: [], jobStatus: "running", repeated: false, retried: true });
      expect(result.retryAt).toBeInstanceOf(Date);
      readyAts.push(result.retryAt as Date);
      expect(await stepA(jobId)).toMatchObject({
        status: "ready",
        workerId: null,
        startedAt: null,
        completedAt: null,
        errorMessage: `boom ${attempt}`,
      });
      // Not due yet: the claim does not hand it out.
      expect(await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 10)).toEqual([]);
      await makeDue(jobId);
    }
    // Exponential from 60 s: 60 then 120, measured from each failure.
    expect(await delaysOf(jobId, readyAts)).toEqual([60, 120]);
    const a = await stepA(jobId);
    expect(a?.retryHistory.map(({ attempt, workerId, error }) => ({ attempt, workerId, error }))).toEqual([
      { attempt: 1, workerId: w, error: "boom 1" },
      { attempt: 2, workerId: w, error: "boom 2" },
    ]);
    expect(a?.retryHistory.every((h) => Date.parse(h.startedAt ?? "") <= Date.parse(h.failedAt))).toBe(true);
    expect((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => s.status)).toEqual(["ready", "pending"]);
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("running");

    // Attempt 3 = 1 + maxRetries: its failure is final and the job advances as before.
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    expect(await JobStepRepo.fail(t.db, { jobId, stepName: "a", workerId: w, attempt: 3 }, "boom 3")).toEqual({
      promoted: [],
      skipped: ["b"],
      jobStatus: "failed",
      repeated: false,
      retried: false,
    });
    expect((await stepA(jobId))?.retryHistory).toHaveLength(2);
  });

  it("fixed delay; a completed retry; a repeated fail of a retried attempt is answered, not applied again", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flaky({ retryStrategy: "fixed", retryBackoffSecs: 30 }));
    const w = await registerWorker(t.db);
    const readyAts: Date[] = [];
    for (const attempt of [1, 2]) {
      await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
      const ref = { jobId, stepName: "a", workerId: w, attempt };
      readyAts.push((await JobStepRepo.fail(t.db, ref, "x")).retryAt as Date);
      const before = await stepA(jobId);
      expect(await JobStepRepo.fail(t.db, ref, "x")).toMatchObject({ repeated: true, retried: true });
      expect(await stepA(jobId)).toEqual(before);
      await makeDue(jobId);
    }
    expect(await delaysOf(jobId, readyAts)).toEqual([30, 30]);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    // A late repeat of attempt 1 while attempt 3 runs is still only a repeat.
    expect(await JobStepRepo.fail(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 }, "x")).toMatchObject({
      repeated: true,
    });
    expect(await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 3 })).toMatchObject({
      promoted: ["b"],
      retried: false,
    });
  });

  it("reportMany retries per report; jitter stays within its range", async () => {
    const ids = await JobRepo.createMany(
      t.db,
      Array.from({ length: 20 }, () => ({ job: newJob, steps: flaky({ retryJitter: 0.5, retryBackoffSecs: 100 }) })),
    );
    const w = await registerWorker(t.db);
    const claimed = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 100);
    const results = await JobStepRepo.reportMany(
      t.db,
      claimed.map((s) => ({
        jobId: s.jobId,
        stepName: s.stepName,
        workerId: w,
        attempt: 1,
        outcome: "failed",
        error: "e",
      })),
    );
    expect(results.every((r) => r.ok && r.retried && !r.repeated && r.jobStatus === "running")).toBe(true);
    for (const [i, jobId] of ids.entries()) {
      const r = results[claimed.findIndex((s) => s.jobId === jobId)];
      const [d] = await delaysOf(jobId, [r?.ok ? (r.retryAt as Date) : new Date(0)]);
      expect([i, d]).toEqual([i, expect.any(Number)]);
      expect(d).toBeGreaterThanOrEqual(50);
      expect(d).toBeLessThanOrEqual(100);
    }
    // Repeated in a batch: answered from the history.
    const again = await JobStepRepo.reportMany(t.db, [
      { jobId: ids[0] as string, stepName: "a", workerId: w, attempt: 1, outcome: "failed", error: "e" },
    ]);
    expect(again[0]).toMatchObject({ ok: true, repeated: true, retried: true });
  });

  it("the server's fail of a step no worker ran is final; its fail of a running step follows the policy", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flaky());
    expect(await JobStepRepo.fail(t.db, { jobId, stepName: "a" }, "ruled out")).toMatchObject({
      retried: false,
      skipped: ["b"],
      jobStatus: "failed",
    });
    const other = await JobRepo.createWithSteps(t.db, newJob, flaky());
    await JobStepRepo.claimReadySteps(t.db, ["shell"], await registerWorker(t.db), 1);
    expect(await JobStepRepo.fail(t.db, { jobId: other, stepName: "a" }, "killed")).toMatchObject({ retried: true });
  });

  it("rejects a bad policy at creation, naming the field, writing nothing", async () => {
    for (const [policy, field] of [
      [{ maxRetries: -1 }, "steps[0].maxRetries"],
      [{ maxRetries: 1.5 }, "steps[0].maxRetries"],
      [{ retryBackoffSecs: RETRY_LIMITS.maxBackoffSecs + 1 }, "steps[0].retryBackoffSecs"],
      [{ retryStrategy: "linear" }, "steps[0].retryStrategy"],
      [{ retryJitter: 1.5 }, "steps[0].retryJitter"],
      [{ retryJitter: Number.NaN }, "steps[0].retryJitter"],
    ] as const) {
      const error = await errorOf(() => JobRepo.createWithSteps(t.db, newJob, flaky(policy as Partial<NewFlowStep>)));
      expect(error).toMatchObject({ name: "InvalidInputError", field });
    }
    const jobId = await JobRepo.create(t.db, newJob);
    expect(
      await errorOf(() =>
        JobStepRepo.createSteps(t.db, [
          { jobId, stepName: "s", actionName: "x", actionType: "shell", status: "ready", maxRetries: 1001 },
        ]),
      ),
    ).toMatchObject({ field: "steps[0].maxRetries" });
    expect(await JobRepo.countByStatus(t.db)).toMatchObject({ pending: 1 });
    // createSteps stores the policy too.
    await JobStepRepo.createSteps(t.db, [
      {
        jobId,
        stepName: "s",
        actionName: "x",
        actionType: "shell",
        status: "ready",
        maxRetries: 3,
        retryStrategy: "fixed",
      },
    ]);
    expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]).toMatchObject({
      maxRetries: 3,
      retryBackoffSecs: 10,
      retryStrategy: "fixed",
      retryJitter: 0,
      retryHistory: [],
    });
  });
});

describe("rescue uses the same budget and history", () => {
  it("past the crash budget (maxRescues 0 here), a stale worker's step is retried after its delay while retries are left, then failed", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flaky({ maxRetries: 1, retryStrategy: "fixed" }));
    const w = await registerWorker(t.db);
    const stale = () =>
      t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await stale();
    expect((await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000, maxRescues: 0 })).requeued).toHaveLength(1);
    const a = await stepA(jobId);
    expect(a).toMatchObject({ status: "ready", errorMessage: `worker ${w} stopped heartbeating` });
    expect(a?.retryHistory).toMatchObject([{ attempt: 1, workerId: w, error: `worker ${w} stopped heartbeating` }]);
    expect(await delaysOf(jobId, [a?.readyAt as Date])).toEqual([60]);
    await makeDue(jobId);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await stale();
    expect((await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000, maxRescues: 0 })).failed).toHaveLength(1);
    expect((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => s.status)).toEqual(["failed", "skipped"]);
    expect((await stepA(jobId))?.retryHistory).toHaveLength(1);
  });
});

describe("the claim and future retries", () => {
  it("does not walk past 100,000 steps waiting for their retry (EXPLAIN ANALYZE)", async () => {
    const jobId = await JobRepo.create(t.db, newJob);
    // Each step is its definition (job_step) and its live state (step_live).
    await t.db.execute(sql`
      insert into job_step (job_id, step_name, action_name, action_type, max_retries)
      select ${jobId}, 'r' || g, 'run', 'shell', 3 from generate_series(1, 100000) g`);
    await t.db.execute(sql`
      insert into step_live (job_id, step_name, action_type, route, status, ready_at, attempts, max_retries, retry_history)
      select ${jobId}, 'r' || g, 'shell', 'shell', 'ready', now() + make_interval(secs => 60 + g % 600), 1, 3,
             '[{"attempt": 1, "error": "x"}]'
      from generate_series(1, 100000) g`);
    await t.db.execute(sql`
      insert into job_step (job_id, step_name, action_name, action_type)
      values (${jobId}, 'due', 'run', 'shell')`);
    await t.db.execute(sql`
      insert into step_live (job_id, step_name, action_type, route, status, ready_at)
      values (${jobId}, 'due', 'shell', 'shell', 'ready', now())`);
    await t.db.execute(sql`analyze job_step`);
    await t.db.execute(sql`analyze step_live`);
    const w = await registerWorker(t.db);
    const { rows } = await t.db.execute<{ "QUERY PLAN": string }>(
      sql`explain (analyze, buffers, costs off, timing off) ${claimStatement(["shell"], w, 10)}`,
    );
    const text = rows.map((r) => r["QUERY PLAN"]).join("\n");
    const next = text.slice(text.indexOf("CTE next"), text.indexOf("CTE claimed"));
    // The index walk stops at the first step not due: it reads one row and a few pages.
    expect(next).toMatch(/Index Scan using idx_step_live_claim on step_live s \(actual rows=1(\.00)? loops=1\)/);
    expect(next).toMatch(/Index Cond: .*ready_at <= now\(\)/);
    expect(next).not.toMatch(/Rows Removed by Filter: [1-9]/);
    const pages = [...next.matchAll(/Buffers: shared (?:hit=(\d+))?\s*(?:read=(\d+))?/g)].map(
      (m) => Number(m[1] ?? 0) + Number(m[2] ?? 0),
    );
    expect(pages.length).toBeGreaterThan(0);
    expect(Math.max(...pages)).toBeLessThan(50); // the 100,000 entries span about 500 index pages
    // EXPLAIN ANALYZE ran the claim: it took the due step only.
    const running = await t.db.execute<{ step_name: string }>(
      sql`select step_name from job_step_state where status = 'running'`,
    );
    expect(running.rows).toEqual([{ step_name: "due" }]);
  }, 120_000);

  it("the crash budget: the first maxRescues rescues are due at once and spend none of the step's retries", async () => {
    // maxRetries 1, a 60 s fixed backoff: a crash costs neither the retry nor the wait.
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flaky({ maxRetries: 1, retryStrategy: "fixed" }));
    const w = await registerWorker(t.db);
    const stale = () =>
      t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
    const claim = async () => (await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1))[0];
    for (let rescue = 1; rescue <= 2; rescue++) {
      expect(await claim()).toMatchObject({ stepName: "a", attempts: rescue });
      await stale();
      expect(await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000, maxRescues: 2 })).toEqual({
        requeued: [{ jobId, stepName: "a", attempts: rescue, workerId: w }],
        failed: [],
        cancelled: [],
      });
      const a = await stepA(jobId);
      expect(a).toMatchObject({ status: "ready", rescues: rescue, maxRetries: 1 + rescue });
      expect(a?.retryHistory).toHaveLength(rescue);
      expect(lastDelay(a)).toBe(0); // due at once
    }
    // The step's own retry is still there: a real failure is retried after its 60 s ...
    expect(await claim()).toMatchObject({ attempts: 3 });
    expect(await JobStepRepo.fail(t.db, { jobId, stepName: "a", workerId: w, attempt: 3 }, "boom")).toMatchObject({
      retried: true,
    });
    expect(lastDelay(await stepA(jobId))).toBe(60);
    await makeDue(jobId);
    // ... and a third crash, past the budget of 2, is a failed attempt with no retries left.
    expect(await claim()).toMatchObject({ attempts: 4 });
    await stale();
    expect((await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000, maxRescues: 2 })).failed).toEqual([
      { jobId, stepName: "a", attempts: 4, workerId: w },
    ]);
    expect(await stepA(jobId)).toMatchObject({ status: "failed", rescues: 2, maxRetries: 3 });
    expect((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => s.status)).toEqual(["failed", "skipped"]);
  });

  it("the default crash budget is 3; a bad maxRescues is refused, changing nothing", async () => {
    expect(JobStepRepo.DEFAULT_MAX_RESCUES).toBe(3);
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flaky({ maxRetries: 0 }));
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
    for (const bad of [-1, 1001, 1.5, "3"]) {
      expect(
        await errorOf(() => JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000, maxRescues: bad as number })),
      ).toMatchObject({ name: "InvalidInputError", field: "maxRescues" });
    }
    expect(await stepA(jobId)).toMatchObject({ status: "running", rescues: 0 });
    // maxRetries 0 and the default budget: a crash does not fail the step.
    expect((await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000 })).requeued).toHaveLength(1);
    expect(await stepA(jobId)).toMatchObject({ status: "ready", rescues: 1, maxRetries: 1 });
  });
});
