import { randomUUID } from "node:crypto";
import { type ActionType, jobStepState, stepLive, stepRoute } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import {
  type Executor,
  InvalidInputError,
  JobRepo,
  JobStepRepo,
  unmatchedReady,
  unmatchedReadySteps,
  WorkerRepo,
} from "../src/index.js";
import { claimStatement } from "../src/internal.js";
import { errorOf, newJob, step } from "./helpers.js";

const t = useTestDb();

// Claims and routes are global: every test starts from an empty queue, no workers, no routes.
beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.execute(sql`delete from worker`);
  await t.db.execute(sql`delete from step_route`);
});

type Routed = { requiredAbility?: ActionType; requiredTags?: string[] };

/** One-step jobs, one per entry, each step named after its key and ready. */
async function readySteps(steps: Record<string, Routed & { actionType?: ActionType }>) {
  const items = Object.entries(steps).map(([name, s]) => ({
    job: { taskName: name, sourceType: "api" as const },
    steps: [{ stepName: name, actionName: "run", actionType: s.actionType ?? "shell", ...s }],
  }));
  return JobRepo.createMany(t.db, items);
}

async function worker(capabilities: ActionType[], tags: string[] = [], exclusive = false) {
  const workerId = randomUUID();
  await WorkerRepo.register(t.db, { workerId, name: `w-${workerId.slice(0, 8)}`, capabilities, tags, exclusive });
  return { workerId, routing: { capabilities, tags, exclusive } };
}

const rollback = new Error("rollback");

/** What `fn` returns inside a transaction that is then rolled back: a claim that changes nothing. */
async function andRollBack<T>(fn: (tx: Executor) => Promise<T>): Promise<T> {
  let out: T | undefined;
  try {
    await t.db.transaction(async (tx) => {
      out = await fn(tx);
      throw rollback;
    });
  } catch (e) {
    if (e !== rollback) throw e;
  }
  return out as T;
}

describe("routing by ability and tags (Strøm's rule)", () => {
  it("a worker takes a step when it has the ability and every required tag; an exclusive one only steps that require all its tags", async () => {
    await readySteps({
      plain: {},
      gpu: { requiredTags: ["gpu"] },
      gpu_eu: { requiredTags: ["gpu", "eu", "gpu"] },
      in_docker: { requiredAbility: "docker" },
      docker_gpu: { actionType: "docker", requiredTags: ["gpu"] },
    });
    const cases: Array<[string, ActionType[], string[], boolean, string[]]> = [
      ["untagged", ["shell"], [], false, ["plain"]],
      ["tagged gpu", ["shell"], ["gpu"], false, ["gpu", "plain"]],
      ["exclusive gpu", ["shell"], ["gpu"], true, ["gpu"]],
      ["exclusive gpu+eu, shell and docker", ["shell", "docker"], ["eu", "gpu"], true, ["gpu_eu"]],
      [
        "gpu+eu, shell and docker",
        ["shell", "docker"],
        ["gpu", "eu"],
        false,
        ["docker_gpu", "gpu", "gpu_eu", "in_docker", "plain"],
      ],
      ["docker only", ["docker"], [], false, ["in_docker"]],
      ["docker only, gpu", ["docker"], ["gpu"], false, ["docker_gpu", "in_docker"]],
      ["exclusive without tags", ["shell"], [], true, ["plain"]],
      ["exclusive eu (no step requires exactly eu)", ["shell", "docker"], ["eu"], true, []],
    ];
    for (const [label, caps, tags, exclusive, expected] of cases) {
      const w = await worker(caps, tags, exclusive);
      const got = await andRollBack((tx) => JobStepRepo.claimReadySteps(tx, w.routing, w.workerId, 100));
      expect(got.map((s) => s.stepName).sort(), label).toEqual(expected);
      // The same worker one at a time (the single-step claim and reportAndClaim take the same routes).
      const one = await andRollBack((tx) => JobStepRepo.claimReadyStep(tx, w.routing, w.workerId));
      if (expected.length === 0) expect(one, label).toBeUndefined();
      else expect(expected, label).toContain(one?.stepName);
    }
  });

  it("stores the routing with the step, read back through the repos, and registers each tagged route once", async () => {
    const [jobId] = await readySteps({ s: { requiredAbility: "docker", requiredTags: ["z", "a", "z"] } });
    const [s] = await JobStepRepo.getStepsForJob(t.db, jobId as string);
    expect(s).toMatchObject({ actionType: "shell", requiredAbility: "docker", requiredTags: ["a", "z"] });
    await readySteps({ again: { requiredAbility: "docker", requiredTags: ["a", "z"] } });
    expect(await t.db.select().from(stepRoute)).toEqual([
      { route: "docker\u001fa\u001fz", ability: "docker", tags: ["a", "z"] },
    ]);
    const live = await t.db.select({ route: stepLive.route }).from(stepLive);
    expect(live.map((r) => r.route)).toEqual(["docker\u001fa\u001fz", "docker\u001fa\u001fz"]);
  });

  it("reportAndClaim claims the next step on the worker's routes only", async () => {
    await readySteps({ g1: { requiredTags: ["gpu"] }, g2: { requiredTags: ["gpu"] }, plain: {} });
    const w = await worker(["shell"], ["gpu"], true);
    const first = await JobStepRepo.claimReadyStep(t.db, w.routing, w.workerId);
    expect(first?.stepName).toMatch(/^g[12]$/);
    const r = await JobStepRepo.reportAndClaim(
      t.db,
      {
        jobId: first?.jobId as string,
        stepName: first?.stepName as string,
        workerId: w.workerId,
        attempt: 1,
        outcome: "completed",
      },
      w.routing,
    );
    expect(r.next?.stepName).toMatch(/^g[12]$/);
    expect(r.next?.stepName).not.toBe(first?.stepName);
    const last = await JobStepRepo.reportAndClaim(
      t.db,
      {
        jobId: r.next?.jobId as string,
        stepName: r.next?.stepName as string,
        workerId: w.workerId,
        attempt: 1,
        outcome: "completed",
      },
      w.routing,
    );
    expect(last.next).toBeUndefined();
    const [plain] = await t.db.select().from(jobStepState).where(eq(jobStepState.stepName, "plain"));
    expect(plain?.status).toBe("ready");
  });

  it("steps added with createSteps, reruns and restarts keep their routes", async () => {
    const jobId = await newJob(t.db);
    await JobStepRepo.createSteps(t.db, [
      step(jobId, "a", { status: "ready" }),
      step(jobId, "b", { dependsOn: ["a"], requiredTags: ["gpu"] }),
    ]);
    const plainWorker = await worker(["shell"]);
    const gpuWorker = await worker(["shell"], ["gpu"], true);
    const a = await JobStepRepo.claimReadyStep(t.db, gpuWorker.routing, gpuWorker.workerId);
    expect(a).toBeUndefined();
    const claimedA = await JobStepRepo.claimReadyStep(t.db, plainWorker.routing, plainWorker.workerId);
    expect(claimedA?.stepName).toBe("a");
    await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: plainWorker.workerId, attempt: 1 });
    // b, promoted by a's report, is on the gpu route only.
    expect(await JobStepRepo.claimReadyStep(t.db, plainWorker.routing, plainWorker.workerId)).toBeUndefined();
    const b = await JobStepRepo.claimReadyStep(t.db, gpuWorker.routing, gpuWorker.workerId);
    expect(b?.stepName).toBe("b");
    await JobStepRepo.complete(t.db, { jobId, stepName: "b", workerId: gpuWorker.workerId, attempt: 1 });
    const restarted = await JobRepo.restart(t.db, jobId, { fromStep: "b" });
    const steps = await JobStepRepo.getStepsForJob(t.db, restarted);
    expect(steps.map((s) => [s.stepName, s.status, s.requiredTags])).toEqual([
      ["a", "completed", []],
      ["b", "ready", ["gpu"]],
    ]);
    expect(await JobStepRepo.claimReadyStep(t.db, plainWorker.routing, plainWorker.workerId)).toBeUndefined();
    expect((await JobStepRepo.claimReadyStep(t.db, gpuWorker.routing, gpuWorker.workerId))?.jobId).toBe(restarted);
  });

  it("refuses bad routing with a typed error naming the field, and writes nothing", async () => {
    const base = { stepName: "s", actionName: "run", actionType: "shell" as const };
    const bad: Array<[string, Record<string, unknown>]> = [
      ["steps[0].requiredTags[1]", { requiredTags: ["ok", ""] }],
      ["steps[0].requiredTags[0]", { requiredTags: ["a\u001fb"] }],
      ["steps[0].requiredTags[0]", { requiredTags: ["x".repeat(65)] }],
      ["steps[0].requiredTags", { requiredTags: Array.from({ length: 33 }, (_, i) => `t${i}`) }],
      ["steps[0].requiredTags", { requiredTags: "gpu" }],
      ["steps[0].requiredAbility", { requiredAbility: "approval" }],
      ["steps[0].requiredAbility", { requiredAbility: "vm" }],
      ["steps[0].requiredTags", { actionType: "approval", requiredTags: ["gpu"] }],
    ];
    for (const [field, extra] of bad) {
      const e = await errorOf(() =>
        JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "api" }, [{ ...base, ...extra } as never]),
      );
      expect(e, field).toBeInstanceOf(InvalidInputError);
      expect((e as InvalidInputError).field, JSON.stringify(extra)).toBe(field);
    }
    const w = randomUUID();
    for (const [field, routing] of [
      ["tags", { capabilities: ["shell"], tags: "gpu" }],
      ["tags[0]", { capabilities: ["shell"], tags: [7] }],
      ["exclusive", { capabilities: ["shell"], tags: [], exclusive: "yes" }],
      ["capabilities", { capabilities: [], tags: ["gpu"] }],
    ] as const) {
      const e = await errorOf(() => JobStepRepo.claimReadyStep(t.db, routing as never, w));
      expect((e as InvalidInputError).field, field).toBe(field);
      const r = await errorOf(() =>
        WorkerRepo.register(t.db, { workerId: w, name: "w", ...(routing as object) } as never),
      );
      expect(r).toBeInstanceOf(InvalidInputError);
    }
    const counts = await t.db.execute<{ jobs: number; routes: number; workers: number }>(
      sql`select (select count(*)::int from job) as jobs, (select count(*)::int from step_route) as routes,
                 (select count(*)::int from worker) as workers`,
    );
    expect(counts.rows[0]).toEqual({ jobs: 0, routes: 0, workers: 0 });
  });
});

describe("the claim walks only the worker's routes (EXPLAIN)", () => {
  /** Bulk ready steps of one job, by hand, each on `route` (with its definition). */
  async function bulkReady(jobId: string, prefix: string, n: number, tags: string[], age: string) {
    await t.db.execute(sql`with d as (
        insert into job_step (job_id, step_name, action_name, action_type, required_tags)
        select ${jobId}, ${prefix} || g, 'run', 'shell', stroem_tags(${sql.param(tags)}::text[])
        from generate_series(1, ${n}) g)
      insert into step_live (job_id, step_name, action_type, route, status, ready_at)
      select ${jobId}, ${prefix} || g, 'shell', stroem_route('shell', ${sql.param(tags)}::text[]), 'ready',
             now() - ${age}::interval
      from generate_series(1, ${n}) g`);
    if (tags.length > 0) {
      await t.db.execute(sql`insert into step_route (route, ability, tags)
        values (stroem_route('shell', ${sql.param(tags)}::text[]), 'shell', stroem_tags(${sql.param(tags)}::text[]))
        on conflict do nothing`);
    }
  }

  it("older ready steps the worker cannot take are never read: by an untagged worker, nor by a tagged one", async () => {
    const jobId = await newJob(t.db);
    // 20,000 older steps that need a gpu, 20,000 older untagged ones, one due gpu step and one due plain step.
    await bulkReady(jobId, "old-gpu", 20_000, ["gpu"], "1 hour");
    await bulkReady(jobId, "old-eu", 20_000, ["eu"], "1 hour");
    await bulkReady(jobId, "gpu", 1, ["gpu"], "1 second");
    await t.db.execute(sql`analyze job_step`);
    await t.db.execute(sql`analyze step_live`);
    const w = await worker(["shell"], ["gpu"], true);
    const routings = [
      { capabilities: ["shell"], tags: [], exclusive: false },
      { capabilities: ["shell"], tags: ["gpu"], exclusive: true },
      { capabilities: ["shell", "docker"], tags: ["gpu"], exclusive: false },
    ];
    for (const routing of routings) {
      const plan = await t.db.execute<{ "QUERY PLAN": string }>(
        sql`explain (analyze, costs off, timing off) ${claimStatement(routing, w.workerId, 10)}`,
      );
      const text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
      const next = text.slice(text.indexOf("CTE next"), text.indexOf("CTE claimed"));
      expect(next, JSON.stringify(routing)).toMatch(/Index Scan using idx_step_live_claim on step_live s/);
      expect(next).toMatch(/Index Cond: \(\(route = /);
      // Each walk of the claim index returns every row it reads (none removed
      // by a filter), at most the limit: the 40,000 older steps of other routes are never read.
      const walks = next.split("Index Scan using idx_step_live_claim on step_live s").slice(1);
      expect(walks.length).toBeGreaterThan(0);
      for (const walk of walks) {
        const node = walk.slice(0, walk.indexOf("Buffers:"));
        expect(node).not.toMatch(/Rows Removed by Filter/);
        expect(Number(/actual rows=([0-9.]+)/.exec(node)?.[1])).toBeLessThanOrEqual(10);
      }
      expect(next).not.toContain("Seq Scan on step_live");
      // EXPLAIN ANALYZE ran the claim: give the steps back for the next round.
      await t.db.execute(
        sql`update step_live set status = 'ready', worker_id = null, started_at = null, attempts = 0
            where status = 'running'`,
      );
    }
  });
});

describe("unmatchedReady and unmatchedReadySteps", () => {
  it("name the ready steps no active worker can take, with why", async () => {
    const [plain, gpu, inDocker] = await readySteps({
      plain: {},
      gpu: { requiredTags: ["gpu"] },
      in_docker: { requiredAbility: "docker" },
    });
    // No worker at all: every route lacks its ability.
    expect((await unmatchedReady(t.db)).map((r) => [r.actionType, r.requiredTags, r.reason, r.ready])).toEqual([
      ["shell", [], "ability", 1],
      ["docker", [], "ability", 1],
      ["shell", ["gpu"], "ability", 1],
    ]);
    // A shell worker without tags: the plain step is takeable; the gpu step lacks its tag.
    await worker(["shell"]);
    const steps = await unmatchedReadySteps(t.db);
    expect(steps.map((s) => [s.jobId, s.stepName, s.requiredAbility, s.requiredTags, s.reason])).toEqual(
      expect.arrayContaining([
        [gpu, "gpu", "shell", ["gpu"], "tags"],
        [inDocker, "in_docker", "docker", [], "ability"],
      ]),
    );
    expect(steps.map((s) => s.jobId)).not.toContain(plain);
    expect(steps[0]?.readyAt).toBeInstanceOf(Date);
    // An exclusive docker worker reserved for gpu+eu has the abilities, but refuses a
    // step that requires gpu alone and one that requires no tag.
    await worker(["shell", "docker"], ["gpu", "eu"], true);
    expect((await unmatchedReadySteps(t.db)).map((s) => [s.stepName, s.reason]).sort()).toEqual([
      ["gpu", "tags"],
      ["in_docker", "tags"],
    ]);
    // A gpu worker of both abilities (not exclusive) takes both: nothing is unmatched.
    await worker(["shell", "docker"], ["gpu"]);
    expect(await unmatchedReadySteps(t.db)).toEqual([]);
    expect(await unmatchedReady(t.db)).toEqual([]);
  });

  it("olderThanMs, staleAfterMs and limit narrow the answer; bad options are refused before any query", async () => {
    const ids = await readySteps({
      old1: { requiredTags: ["gpu"] },
      old2: { requiredTags: ["gpu"] },
      fresh: { requiredTags: ["gpu"] },
    });
    await t.db.execute(sql`update step_live set ready_at = now() - interval '10 minutes'
      where job_id = any(${sql.param(ids.slice(0, 2))}::uuid[])`);
    const old = await unmatchedReadySteps(t.db, { olderThanMs: 5 * 60_000 });
    expect(old.map((s) => s.stepName)).toEqual(expect.arrayContaining(["old1", "old2"]));
    expect(old).toHaveLength(2);
    expect(old[0]?.waitingMs).toBeGreaterThanOrEqual(10 * 60_000 - 1000);
    expect(await unmatchedReadySteps(t.db, { olderThanMs: 5 * 60_000, limit: 1 })).toHaveLength(1);
    expect(await unmatchedReadySteps(t.db)).toHaveLength(3);
    // A gpu worker that has been silent for an hour counts as absent with staleAfterMs.
    const w = await worker(["shell"], ["gpu"]);
    await t.db.execute(
      sql`update worker set last_heartbeat = now() - interval '1 hour' where worker_id = ${w.workerId}`,
    );
    expect(await unmatchedReadySteps(t.db)).toEqual([]);
    expect((await unmatchedReadySteps(t.db, { staleAfterMs: 60_000 })).map((s) => s.reason)).toEqual([
      "ability",
      "ability",
      "ability",
    ]);
    for (const [field, options] of [
      ["olderThanMs", { olderThanMs: -1 }],
      ["limit", { limit: 0 }],
      ["limit", { limit: 1001 }],
      ["staleAfterMs", { staleAfterMs: 0 }],
    ] as const) {
      const e = await errorOf(() => unmatchedReadySteps(t.db, options));
      expect((e as InvalidInputError).field).toBe(field);
    }
  });
});
