import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { type Flow, stepAction } from "@stroem/orchestrator";
import { worker } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError, JobRepo, JobStepRepo, StepOwnershipError } from "../src/index.js";
import { errorOf, registerWorker, waitFor } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.execute(sql`delete from worker`);
});

const chain: Flow = { build: { actionName: "b" }, deploy: { actionName: "d", dependsOn: ["build"] } };
const createChain = (maxRetries = 2) =>
  JobRepo.createWithSteps(
    t.db,
    { taskName: "chain", sourceType: "api" },
    Object.entries(chain).map(([stepName, s]) => ({
      stepName,
      actionName: stepAction(s) ?? "",
      actionType: "shell" as const,
      dependsOn: s.dependsOn,
      maxRetries,
      retryBackoffSecs: 0,
    })),
  );

/** Makes a worker's last heartbeat `ms` old (the database's clock decides staleness). */
const ageHeartbeat = (workerId: string, ms: number) =>
  t.db
    .update(worker)
    .set({ lastHeartbeat: sql`now() - make_interval(secs => ${ms / 1000})` })
    .where(eq(worker.workerId, workerId));

describe("rescueStaleSteps", () => {
  it("a worker killed with SIGKILL mid-step: its step is requeued, run again once, and its late report refused", async () => {
    const jobId = await createChain();
    const doomed = randomUUID();
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL("./fixtures/crashing-worker.mjs", import.meta.url)), t.url, doomed, t.pooler ?? ""],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const claimed = await new Promise<{ stepName: string; attempts: number }>((resolve, reject) => {
      let out = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0] as string));
      });
      child.once("exit", () => reject(new Error(`worker exited early: ${out}`)));
    });
    expect(claimed).toMatchObject({ stepName: "build", attempts: 1 });
    child.kill("SIGKILL");
    await exited;

    // While its heartbeat is fresh, nothing is rescued.
    expect(await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 60_000 })).toEqual({
      requeued: [],
      failed: [],
      cancelled: [],
    });
    // Once it is stale (wait for it, with a deadline), the step goes back to the queue.
    let rescued: Awaited<ReturnType<typeof JobStepRepo.rescueStaleSteps>> = { requeued: [], failed: [], cancelled: [] };
    await waitFor(async () => {
      rescued = await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 300 });
      return rescued.requeued.length > 0;
    });
    expect(rescued).toEqual({
      requeued: [{ jobId, stepName: "build", attempts: 1, workerId: doomed }],
      failed: [],
      cancelled: [],
    });

    // Another worker runs it: second attempt.
    const healthy = await registerWorker(t.db, ["shell"]);
    const again = await JobStepRepo.claimReadyStep(t.db, ["shell"], healthy);
    expect(again).toMatchObject({ stepName: "build", attempts: 2, workerId: healthy });
    // The dead worker's late report (its guard: itself, attempt 1) changes nothing.
    expect(
      await errorOf(() =>
        JobStepRepo.markCompleted(t.db, jobId, "build", { late: true }, { workerId: doomed, attempt: 1 }),
      ),
    ).toBeInstanceOf(StepOwnershipError);
    await t.db.transaction(async (tx) => {
      await JobStepRepo.markCompleted(tx, jobId, "build", { ok: true }, { workerId: healthy, attempt: 2 });
      await JobRepo.advance(tx, jobId);
    });
    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.map((s) => [s.stepName, s.status, s.attempts])).toEqual([
      ["build", "completed", 2],
      ["deploy", "ready", 0],
    ]);
    expect(steps[0]?.output).toEqual({ ok: true });
  });

  it("with the crash budget spent and no retries left the step fails and the job moves on (its dependants skipped, the job failed)", async () => {
    const jobId = await createChain(0);
    const w = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
    await ageHeartbeat(w, 10_000);
    const result = await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000, maxRescues: 0 });
    expect(result.failed).toEqual([{ jobId, stepName: "build", attempts: 1, workerId: w }]);
    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.map((s) => [s.stepName, s.status])).toEqual([
      ["build", "failed"],
      ["deploy", "skipped"],
    ]);
    expect(steps[0]?.errorMessage).toBe(`worker ${w} stopped heartbeating`);
    expect(steps[0]?.rescues).toBe(0);
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("failed");
  });

  it("never touches live workers' steps, finished steps, or steps locked by a report in flight", async () => {
    const jobId = await createChain();
    const live = await registerWorker(t.db, ["shell"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], live);
    expect(await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000 })).toEqual({
      requeued: [],
      failed: [],
      cancelled: [],
    });

    // The worker is stale, but its report is being written right now (row locked):
    // the rescue skips the row and the report wins.
    await ageHeartbeat(live, 10_000);
    const reporter = t.openPool({ max: 1 });
    try {
      await reporter.transaction(async (tx) => {
        await JobStepRepo.markCompleted(tx, jobId, "build", { ok: true }, { workerId: live, attempt: 1 });
        expect(await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000 })).toEqual({
          requeued: [],
          failed: [],
          cancelled: [],
        });
        await JobRepo.advance(tx, jobId);
      });
    } finally {
      await reporter.$client.end();
    }
    // Finished: nothing to rescue, whatever the heartbeat says.
    expect(await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000 })).toEqual({
      requeued: [],
      failed: [],
      cancelled: [],
    });
    expect((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => s.status)).toEqual(["completed", "ready"]);
  });

  it("validates its options", async () => {
    expect(await errorOf(() => JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 0 }))).toBeInstanceOf(
      InvalidInputError,
    );
    expect(
      await errorOf(() => JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 10, maxAttempts: 3 } as never)),
    ).toMatchObject({ name: "InvalidInputError", field: "maxAttempts" });
  });
});
