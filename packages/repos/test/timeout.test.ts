import type { NewFlowStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { JobRepo, JobStepRepo, WorkerRepo } from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
});

const newJob = { taskName: "t", sourceType: "api" } as const;
const flow: NewFlowStep[] = [
  { stepName: "a", actionName: "x", actionType: "shell", timeoutSecs: 60, maxRetries: 1, retryBackoffSecs: 0 },
  { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
  { stepName: "free", actionName: "x", actionType: "shell" },
];

async function statuses(jobId: string) {
  const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
  return Object.fromEntries(steps.map((s) => [s.stepName, s.status]));
}

/** Moves a running step's start `secs` into the past (its live row): the test moves time instead of sleeping. */
const startedAgo = (jobId: string, stepName: string, secs: number) =>
  t.db.execute(sql`update step_live set started_at = now() - make_interval(secs => ${secs})
    where job_id = ${jobId} and step_name = ${stepName}`);

describe("sweepTimeouts: steps", () => {
  it("fails a run past its timeout as its worker's failure would (retry, then final), and the worker learns it", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 2); // a and free
    await startedAgo(jobId, "free", 3600); // no timeout: never swept
    await startedAgo(jobId, "a", 59);
    expect(await JobStepRepo.sweepTimeouts(t.db)).toEqual({ steps: [], gates: [], jobs: [], children: [] });

    await startedAgo(jobId, "a", 61);
    expect(await JobStepRepo.sweepTimeouts(t.db)).toEqual({
      steps: [{ jobId, stepName: "a", workerId: w, attempt: 1, outcome: "retried" }],
      gates: [],
      jobs: [],
      children: [],
    });
    const [a] = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(a).toMatchObject({ status: "ready", errorMessage: "timed out: running for more than 60 s (timeoutSecs)" });
    expect(a?.retryHistory).toMatchObject([{ attempt: 1, workerId: w, error: a?.errorMessage }]);
    expect(await JobStepRepo.sweepTimeouts(t.db)).toEqual({ steps: [], gates: [], jobs: [], children: [] });

    // The worker lists what it runs: the heartbeat says to stop `a` (and not `free`), and its late report is refused.
    const running = [
      { jobId, stepName: "a", attempt: 1 },
      { jobId, stepName: "free", attempt: 1 },
    ];
    expect(await WorkerRepo.heartbeat(t.db, w, { running })).toEqual([
      { jobId, stepName: "a", attempt: 1, requestedAt: expect.any(Date), reason: a?.errorMessage },
    ]);
    expect(await WorkerRepo.heartbeat(t.db, w)).toEqual([]);
    expect(
      await errorOf(() => JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 })),
    ).toMatchObject({ name: "StepOwnershipError", currentStatus: "ready" });

    // Second run, timed out too: no retries left, it fails and the job advances.
    const [again] = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    expect(again).toMatchObject({ stepName: "a", attempts: 2 });
    await startedAgo(jobId, "a", 600);
    expect((await JobStepRepo.sweepTimeouts(t.db)).steps).toEqual([
      { jobId, stepName: "a", workerId: w, attempt: 2, outcome: "failed" },
    ]);
    expect(await statuses(jobId)).toEqual({ a: "failed", b: "skipped", free: "running" });
    // Its late success is refused; its late failure matches what is recorded: a repeat, nothing written.
    const ref2 = { jobId, stepName: "a", workerId: w, attempt: 2 };
    expect(await errorOf(() => JobStepRepo.complete(t.db, ref2))).toMatchObject({ name: "InvalidTransitionError" });
    expect(await JobStepRepo.fail(t.db, ref2, "late")).toMatchObject({ repeated: true });
    expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]?.errorMessage).toMatch(/^timed out/);
    expect(await WorkerRepo.heartbeat(t.db, w, { running: [{ jobId, stepName: "a", attempt: 2 }] })).toMatchObject([
      { stepName: "a", attempt: 2, reason: "timed out: running for more than 60 s (timeoutSecs)" },
    ]);
  });

  it("a report that committed first wins; heartbeat validates what the worker lists", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow.slice(0, 1));
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await startedAgo(jobId, "a", 3600);
    await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 });
    expect(await JobStepRepo.sweepTimeouts(t.db)).toEqual({ steps: [], gates: [], jobs: [], children: [] });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("completed");
    expect(
      await errorOf(() => WorkerRepo.heartbeat(t.db, w, { running: [{ jobId, stepName: "a", attempt: 0 }] as never })),
    ).toMatchObject({ name: "InvalidInputError", field: "options.running[0].attempt" });
  });
});

describe("sweepTimeouts: jobs", () => {
  it("fails a job not finished in time: steps not started are cancelled, running ones asked to stop", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { ...newJob, timeoutSecs: 300 }, flow);
    const untimed = await JobRepo.createWithSteps(t.db, newJob, flow);
    const finished = await JobRepo.createWithSteps(t.db, { ...newJob, timeoutSecs: 1 }, flow.slice(2));
    await JobStepRepo.complete(t.db, { jobId: finished, stepName: "free" });
    const w = await registerWorker(t.db);
    const claimed = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 10);
    expect(claimed.filter((s) => s.jobId === jobId).map((s) => s.stepName)).toEqual(["a", "free"]);
    await t.db.execute(sql`update job set created_at = now() - interval '1 hour'`);
    await t.db.execute(sql`update step_live set started_at = now() where job_id = ${jobId}`); // no step timeout here

    expect(await JobStepRepo.sweepTimeouts(t.db)).toEqual({ steps: [], gates: [], jobs: [jobId], children: [] });
    const job = await JobRepo.get(t.db, jobId);
    expect(job).toMatchObject({
      status: "failed",
      errorMessage: "timed out: not finished 300 s after its creation (timeoutSecs)",
    });
    expect(job?.completedAt).toBeInstanceOf(Date);
    expect(await statuses(jobId)).toEqual({ a: "running", b: "cancelled", free: "running" });
    expect((await JobRepo.get(t.db, untimed))?.status).toBe("running");
    expect((await JobRepo.get(t.db, finished))?.status).toBe("completed");

    // The worker learns it as a cancel, and stops its steps.
    const stop = await WorkerRepo.heartbeat(t.db, w);
    expect(stop.filter((r) => r.jobId === jobId)).toEqual([
      { jobId, stepName: "a", attempt: 1, requestedAt: expect.any(Date), reason: job?.errorMessage },
      { jobId, stepName: "free", attempt: 1, requestedAt: expect.any(Date), reason: job?.errorMessage },
    ]);
    await JobStepRepo.markCancelled(t.db, { jobId, stepName: "a", workerId: w, attempt: 1 });
    expect(await JobStepRepo.complete(t.db, { jobId, stepName: "free", workerId: w, attempt: 1 })).toMatchObject({
      promoted: [],
      jobStatus: "failed",
    });
    expect(await JobStepRepo.sweepTimeouts(t.db)).toEqual({ steps: [], gates: [], jobs: [], children: [] });
  });

  it("rejects bad timeouts at creation, naming the field, writing nothing", async () => {
    expect(await errorOf(() => JobRepo.createWithSteps(t.db, { ...newJob, timeoutSecs: 0 }, flow))).toMatchObject({
      name: "InvalidInputError",
      field: "timeoutSecs",
    });
    expect(
      await errorOf(() => JobRepo.createWithSteps(t.db, newJob, [{ ...(flow[0] as NewFlowStep), timeoutSecs: 1.5 }])),
    ).toMatchObject({ field: "steps[0].timeoutSecs" });
    expect(await JobRepo.countByStatus(t.db)).toMatchObject({ pending: 0 });
    const jobId = await JobRepo.create(t.db, { ...newJob, timeoutSecs: 5 });
    expect((await JobRepo.get(t.db, jobId))?.timeoutSecs).toBe(5);
  });
});

describe("the sweep's cost follows its candidates", () => {
  it("its four candidate queries walk the partial indexes and the deadlines, not the history (EXPLAIN ANALYZE)", async () => {
    // The queries exactly as the installed function runs them.
    const source = await t.db.execute<{ src: string }>(
      sql`select prosrc as src from pg_proc where proname = 'stroem_sweep_timeouts'`,
    );
    const queries = [...(source.rows[0]?.src ?? "").matchAll(/FOR r IN\s+(SELECT[\s\S]*?)\s+LOOP/g)].map(
      (m) => m[1] as string,
    );
    expect(queries).toHaveLength(4);
    // History: 20,000 running steps without a timeout; 5,000 jobs with a
    // timeout that finished in time (a first sweep visits and drops their
    // deadlines) and 5,000 unfinished ones not due yet; 3 candidates of each kind.
    // Seeded by hand: each step is its definition (job_step) and its live row
    // (step_live); each unfinished job of zero steps its job_live row, each
    // finished one its job_result row; a job of one step has no job_live row.
    const big = await JobRepo.create(t.db, newJob);
    const w = await registerWorker(t.db);
    await t.db.execute(sql`
      insert into job_step (job_id, step_name, action_name)
      select ${big}, 's' || g, 'run' from generate_series(1, 20000) g`);
    await t.db.execute(sql`
      insert into step_live (job_id, step_name, action_type, route, status, worker_id, started_at, attempts)
      select ${big}, 's' || g, 'shell', 'shell', 'running', ${w}, now() - interval '1 day', 1 from generate_series(1, 20000) g`);
    await t.db.execute(sql`
      with jobs as (
        insert into job (job_id, task_name, source_type, created_at, timeout_secs)
        select gen_random_uuid(), 'old', 'api', now() - interval '2 days', 60 from generate_series(1, 5000)
        returning job_id
      )
      insert into job_live (job_id, status, started_at)
      select job_id, 'running', now() - interval '2 days' from jobs`);
    // Finished: the live rows move to job_result (trigger job_live_ended).
    await t.db.execute(sql`
      update job_live set status = 'completed', completed_at = now() - interval '2 days'
      where job_id in (select job_id from job where task_name = 'old')`);
    expect(
      await t.db.execute(
        sql`select count(*)::int as n from job_state where task_name = 'old' and status = 'completed'`,
      ),
    ).toMatchObject({ rows: [{ n: 5000 }] });
    expect(await t.db.execute(sql`select count(*)::int as n from job_deadline`)).toMatchObject({ rows: [{ n: 5000 }] });
    expect((await JobStepRepo.sweepTimeouts(t.db)).jobs).toEqual([]);
    expect(await t.db.execute(sql`select count(*)::int as n from job_deadline`)).toMatchObject({ rows: [{ n: 0 }] });
    await t.db.execute(sql`
      with jobs as (
        insert into job (job_id, task_name, source_type, timeout_secs)
        select gen_random_uuid(), 'young', 'api', 3600 from generate_series(1, 5000)
        returning job_id
      )
      insert into job_live (job_id, status, started_at) select job_id, 'running', now() from jobs`);
    await t.db.execute(sql`
      insert into job_step (job_id, step_name, action_name, timeout_secs)
      select ${big}, 't' || g, 'run', 60 from generate_series(1, 3) g`);
    await t.db.execute(sql`
      insert into step_live (job_id, step_name, action_type, route, status, worker_id, started_at, attempts, timeout_secs)
      select ${big}, 't' || g, 'shell', 'shell', 'running', ${w}, now() - interval '1 day', 1, 60 from generate_series(1, 3) g`);
    await t.db.execute(sql`
      with jobs as (
        insert into job (job_id, task_name, source_type, created_at, timeout_secs)
        select gen_random_uuid(), 'late', 'api', now() - interval '1 day', 60 from generate_series(1, 3)
        returning job_id
      )
      insert into job_live (job_id, status, started_at) select job_id, 'running', now() - interval '1 day' from jobs`);
    // Gates: 5,000 suspended without a timeout (not candidates), 3 past theirs, each in a job of its own.
    await t.db.execute(sql`
      insert into job_step (job_id, step_name, action_name, action_type)
      select ${big}, 'g' || g, 'sign-off', 'approval' from generate_series(1, 5000) g`);
    await t.db.execute(sql`
      insert into step_live (job_id, step_name, action_type, route, status, suspended_at)
      select ${big}, 'g' || g, 'approval', 'approval', 'suspended', now() - interval '1 day' from generate_series(1, 5000) g`);
    const gates = await t.db.execute<{ job_id: string }>(sql`
      insert into job (job_id, task_name, source_type) select gen_random_uuid(), 'gate', 'api'
      from generate_series(1, 3) returning job_id`);
    for (const { job_id } of gates.rows) {
      // A job of one step: its step's live row is its state (running: job_started_at set).
      await t.db.execute(sql`insert into job_step (job_id, step_name, action_name, action_type, timeout_secs)
        values (${job_id}, 'approve', 'sign-off', 'approval', 60)`);
      await t.db.execute(sql`insert into step_live (job_id, step_name, action_type, route, status, suspended_at,
        timeout_secs, job_started_at)
        values (${job_id}, 'approve', 'approval', 'approval', 'suspended', now() - interval '1 day', 60, now() - interval '1 day')`);
    }
    await t.db.execute(
      sql`select stroem_recount(array[${big}]::uuid[] || ${sql.param(gates.rows.map((r) => r.job_id))}::uuid[])`,
    );
    // Orphaned children: 3 unfinished child jobs whose parent step is no longer live (among the 10,000 live jobs).
    await t.db.execute(sql`
      with jobs as (
        insert into job (job_id, task_name, source_type, parent_job_id, parent_step_name)
        select gen_random_uuid(), 'orphan', 'api', ${big}, 'gone' from generate_series(1, 3)
        returning job_id
      )
      insert into job_live (job_id, status, parent_job_id, parent_step_name) select job_id, 'pending', ${big}, 'gone' from jobs`);
    expect(
      await t.db.execute(
        sql`select status, count(*)::int as n from job_state where task_name = 'gate' group by status`,
      ),
    ).toMatchObject({ rows: [{ status: "running", n: 3 }] });
    for (const table of ["job_step", "step_live", "job", "job_live", "job_result", "job_deadline"]) {
      await t.db.execute(sql`analyze ${sql.identifier(table)}`);
    }
    for (const [query, index] of [
      [queries[0], "idx_step_live_timeout"],
      [queries[1], "idx_step_live_suspended"],
      [queries[2], "idx_job_deadline"],
      [queries[3], "idx_job_live_parent"],
    ] as const) {
      const plan = await t.db.execute<{ "QUERY PLAN": string }>(
        sql`explain (analyze, costs off, timing off) ${sql.raw(query as string)}`,
      );
      const text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
      expect(text).toContain(index);
      expect(text).not.toContain("Seq Scan");
      // The index holds the candidates only: 3 rows read, each a match.
      expect(text).toMatch(
        /(Index Scan using \w+ on \w+ \w+|Bitmap Index Scan on \w+) \(actual rows=3(\.00)? loops=1\)/,
      );
      expect(text).not.toMatch(/Rows Removed by Filter: [1-9]/);
    }
    const swept = await JobStepRepo.sweepTimeouts(t.db);
    expect([swept.steps.length, swept.gates.length, swept.jobs.length, swept.children.length]).toEqual([3, 3, 3, 3]);
    // Each late job's deadline was visited once and dropped; the young ones wait.
    expect(await t.db.execute(sql`select count(*)::int as n from job_deadline`)).toMatchObject({
      rows: [{ n: 5000 }],
    });
  }, 120_000);
});
