import { type Flow, planAdvance, stepAction, toFlow } from "@stroem/orchestrator";
import { useTestDb } from "@stroem/testing/fixture";
import { describe, expect, it } from "vitest";
import { type Executor, JobRepo, JobStepRepo } from "../src/index.js";
import { registerWorker } from "./helpers.js";

const t = useTestDb();

/** A small seeded PRNG (mulberry32): the same seed gives the same graphs and outcomes. */
function rng(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random DAG of 2..14 steps: step i depends on some earlier steps; some steps continue on failure. */
function randomFlow(next: () => number): Flow {
  const n = 2 + Math.floor(next() * 13);
  const flow: Flow = {};
  for (let i = 0; i < n; i++) {
    const deps: string[] = [];
    for (let j = 0; j < i; j++) if (next() < 0.3) deps.push(`s${j}`);
    flow[`s${i}`] = { actionName: "x", dependsOn: deps, continueOnFailure: next() < 0.15 };
  }
  return flow;
}

describe("random DAGs run by concurrent workers", () => {
  it("every job ends as the orchestrator's rules say, and no step starts before its dependencies finished", async () => {
    const next = rng(20261126);
    const flows = Array.from({ length: 40 }, () => randomFlow(next));
    const jobIds: string[] = [];
    for (const flow of flows) {
      jobIds.push(
        await JobRepo.createWithSteps(
          t.db,
          { taskName: "random", sourceType: "api" },
          Object.entries(flow).map(([stepName, s]) => ({
            stepName,
            actionName: stepAction(s) ?? "",
            actionType: next() < 0.5 ? ("shell" as const) : ("docker" as const),
            dependsOn: s.dependsOn,
            continueOnFailure: s.continueOnFailure,
          })),
        ),
      );
    }
    const outcomes = new Map<string, boolean>(); // job/step -> fails
    for (const [i, flow] of flows.entries()) {
      for (const name of Object.keys(flow)) outcomes.set(`${jobIds[i]}/${name}`, next() < 0.2);
    }
    const finished = new Set<string>();
    const capabilities = [
      ["shell", "docker"],
      ["shell"],
      ["docker"],
      ["shell", "docker"],
      ["shell"],
      ["docker"],
    ] as const;
    const workers = await Promise.all(capabilities.map((c) => registerWorker(t.db, [...c])));
    const pools = workers.map(() => t.openPool({ max: 1 }));
    try {
      await Promise.all(
        workers.map(async (workerId, i) => {
          const db = pools[i] as Executor;
          const deadline = Date.now() + 60_000;
          while (finished.size < jobIds.length) {
            if (Date.now() > deadline) throw new Error("the run is stuck");
            const batch = await JobStepRepo.claimReadySteps(db, [...(capabilities[i] ?? [])], workerId, 1 + (i % 3));
            if (batch.length === 0) {
              await new Promise((r) => setTimeout(r, 2));
              continue;
            }
            // Three report paths side by side: one call each, a batch, and
            // the composed bare mark + advance.
            const fails = (s: { jobId: string; stepName: string }) => outcomes.get(`${s.jobId}/${s.stepName}`);
            if (i % 3 === 1) {
              const results = await JobStepRepo.reportMany(
                db,
                batch.map((step) => ({
                  jobId: step.jobId,
                  stepName: step.stepName,
                  workerId,
                  attempt: step.attempts,
                  ...(fails(step)
                    ? { outcome: "failed" as const, error: "random failure" }
                    : { outcome: "completed" as const }),
                })),
              );
              for (const [k, r] of results.entries()) {
                if (!r.ok) throw r.error;
                if (r.jobStatus !== "running") finished.add((batch[k] as { jobId: string }).jobId);
              }
              continue;
            }
            for (const step of batch) {
              const guard = { workerId, attempt: step.attempts };
              const result =
                i % 3 === 0
                  ? fails(step)
                    ? await JobStepRepo.fail(
                        db,
                        { jobId: step.jobId, stepName: step.stepName, ...guard },
                        "random failure",
                      )
                    : await JobStepRepo.complete(db, { jobId: step.jobId, stepName: step.stepName, ...guard })
                  : await db.transaction(async (tx) => {
                      if (fails(step)) {
                        await JobStepRepo.markFailed(tx, step.jobId, step.stepName, "random failure", guard);
                      } else {
                        await JobStepRepo.markCompleted(tx, step.jobId, step.stepName, null, guard);
                      }
                      return JobRepo.advance(tx, step.jobId);
                    });
              if (result.jobStatus !== "running") finished.add(step.jobId);
            }
          }
        }),
      );
    } finally {
      await Promise.all(pools.map((p) => p.$client.end()));
    }

    for (const [i, jobId] of jobIds.entries()) {
      const job = await JobRepo.get(t.db, jobId);
      const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
      const byName = new Map(steps.map((s) => [s.stepName, s]));
      // The stored graph is the one the job was created with.
      expect(toFlow(steps)).toEqual(
        Object.fromEntries(
          Object.entries(flows[i] as Flow).map(([n, s]) => [
            n,
            { actionName: stepAction(s) ?? "", dependsOn: s.dependsOn, continueOnFailure: s.continueOnFailure },
          ]),
        ),
      );
      const plan = planAdvance(steps, toFlow(steps));
      expect(plan.promote).toEqual([]);
      expect(plan.skip).toEqual([]);
      expect(job?.status).toBe(plan.jobStatus);
      for (const s of steps) {
        expect(["completed", "failed", "skipped"]).toContain(s.status);
        // Ran steps were claimed once, by the outcome chosen for them.
        if (s.status !== "skipped") {
          expect(s.attempts).toBe(1);
          expect(s.status).toBe(outcomes.get(`${jobId}/${s.stepName}`) ? "failed" : "completed");
        } else {
          expect(s.attempts).toBe(0);
        }
        for (const d of s.dependsOn) {
          const dep = byName.get(d);
          expect(dep?.completedAt).toBeInstanceOf(Date);
          // No step started before each of its dependencies had finished.
          if (s.startedAt)
            expect(s.startedAt.getTime()).toBeGreaterThanOrEqual(dep?.completedAt?.getTime() ?? Infinity);
        }
      }
    }
  });

  it("each report's promotions, skips and job status are those planAdvance gives, one report at a time", async () => {
    const next = rng(4242);
    const workerId = await registerWorker(t.db);
    for (let round = 0; round < 60; round++) {
      const flow = randomFlow(next);
      const jobId = await JobRepo.createWithSteps(
        t.db,
        { taskName: "oracle", sourceType: "api" },
        Object.entries(flow).map(([stepName, s]) => ({ stepName, actionType: "shell" as const, ...s })),
      );
      for (;;) {
        const [step] = await JobStepRepo.getReadySteps(t.db, jobId);
        if (!step) break;
        await JobStepRepo.markRunning(t.db, jobId, step.stepName, workerId);
        const failed = next() < 0.3;
        // The oracle: the full re-plan of the job once this step has its outcome.
        const before = await JobStepRepo.getStepsForJob(t.db, jobId);
        const plan = planAdvance(
          before.map((s) => ({
            stepName: s.stepName,
            status: s.stepName === step.stepName ? (failed ? "failed" : "completed") : s.status,
          })),
          flow,
        );
        const ref = { jobId, stepName: step.stepName, workerId, attempt: 1 };
        const got = failed ? await JobStepRepo.fail(t.db, ref, "boom") : await JobStepRepo.complete(t.db, ref);
        expect([...got.promoted].sort()).toEqual([...plan.promote].sort());
        expect([...got.skipped].sort()).toEqual([...plan.skip].sort());
        expect(got.jobStatus).toBe(plan.jobStatus);
      }
      expect((await JobRepo.get(t.db, jobId))?.status).not.toBe("running");
    }
  }, 60_000);

  // reportMany applies a batch's outcomes level by level across all its jobs
  // at once: a join whose parents report in one batch, a skip cascading from
  // a failure, and (sometimes) a bare mark waiting for an advance, all in the
  // same call. The oracle is planAdvance on each job with every outcome of
  // the batch applied; each move is credited to exactly one of the job's
  // reports (the last of the batch that reached it).
  it("a batch finishing several steps of each of several jobs moves every job as planAdvance does", async () => {
    const next = rng(777);
    const workerId = await registerWorker(t.db);
    let batches = 0;
    let joins = 0;
    let waiting = 0;
    for (let round = 0; round < 25; round++) {
      const jobs = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const flow = randomFlow(next);
          const jobId = await JobRepo.createWithSteps(
            t.db,
            { taskName: "oracle-batch", sourceType: "api" },
            Object.entries(flow).map(([stepName, s]) => ({ stepName, actionType: "shell" as const, ...s })),
          );
          return { jobId, flow };
        }),
      );
      for (;;) {
        const reports: Parameters<typeof JobStepRepo.reportMany>[1][number][] = [];
        const oracle = new Map<string, ReturnType<typeof planAdvance>>();
        for (const { jobId, flow } of jobs) {
          const ready = await JobStepRepo.getReadySteps(t.db, jobId);
          if (ready.length === 0) continue;
          const outcomes = new Map<string, "completed" | "failed">();
          for (const step of ready) {
            await JobStepRepo.markRunning(t.db, jobId, step.stepName, workerId);
            outcomes.set(step.stepName, next() < 0.3 ? "failed" : "completed");
          }
          // Now and then the job's first ready step gets a bare mark (no
          // advance): the batch's call must apply it too.
          const [first, ...rest] = ready;
          let bare: string | undefined;
          if (first && rest.length > 0 && next() < 0.25) {
            bare = first.stepName;
            const guard = { workerId, attempt: 1 };
            if (outcomes.get(first.stepName) === "failed")
              await JobStepRepo.markFailed(t.db, jobId, first.stepName, "bare", guard);
            else await JobStepRepo.markCompleted(t.db, jobId, first.stepName, undefined, guard);
            waiting++;
          }
          const before = await JobStepRepo.getStepsForJob(t.db, jobId);
          oracle.set(
            jobId,
            planAdvance(
              before.map((s) => ({ stepName: s.stepName, status: outcomes.get(s.stepName) ?? s.status })),
              flow,
            ),
          );
          for (const step of ready) {
            if (step.stepName === bare) continue;
            const outcome = outcomes.get(step.stepName) ?? "completed";
            reports.push({
              jobId,
              stepName: step.stepName,
              workerId,
              attempt: 1,
              ...(outcome === "failed" ? { outcome, error: "boom" } : { outcome }),
            });
          }
        }
        if (oracle.size === 0) break;
        // Interleave the jobs' reports (the batch's order is not the jobs').
        reports.sort(() => next() - 0.5);
        const results = await JobStepRepo.reportMany(t.db, reports);
        batches++;
        for (const [jobId, plan] of oracle) {
          const mine = results.filter((_, k) => reports[k]?.jobId === jobId);
          if (mine.length > 1) joins++;
          for (const r of mine) {
            if (!r.ok) throw r.error;
            expect(r.jobStatus).toBe(plan.jobStatus);
          }
          const promoted = mine.flatMap((r) => (r.ok ? [...r.promoted] : []));
          const skipped = mine.flatMap((r) => (r.ok ? [...r.skipped] : []));
          // Each move once, and exactly the oracle's.
          expect(promoted.sort()).toEqual([...plan.promote].sort());
          expect(skipped.sort()).toEqual([...plan.skip].sort());
          expect((await JobRepo.get(t.db, jobId))?.status).toBe(plan.jobStatus);
        }
      }
      for (const { jobId } of jobs) expect((await JobRepo.get(t.db, jobId))?.status).not.toBe("running");
    }
    // The generator did produce what the test is about.
    expect(batches).toBeGreaterThan(50);
    expect(joins).toBeGreaterThan(20);
    expect(waiting).toBeGreaterThan(5);
  }, 90_000);
});
