import { randomUUID } from "node:crypto";
import { jobStep, type NewJobStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  DuplicateStepError,
  InvalidInputError,
  InvalidTransitionError,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  StepNotFoundError,
  StepOwnershipError,
  WorkerNotFoundError,
} from "../src/index.js";
import { errorOf, jobWithReadySteps, newJob, registerWorker, step } from "./helpers.js";

const t = useTestDb();

async function stepCount(jobId: string) {
  const [row] = await t.db.select({ n: sql<number>`count(*)::int` }).from(jobStep).where(eq(jobStep.jobId, jobId));
  return row?.n ?? -1;
}

describe("createSteps", () => {
  it("an empty list is a no-op", async () => {
    const jobId = await newJob(t.db);
    await JobStepRepo.createSteps(t.db, [step(jobId, "existing")]);
    await JobStepRepo.createSteps(t.db, []);
    expect(await stepCount(jobId)).toBe(1);
  });

  it("inserts 20,000 steps in one call", async () => {
    const jobId = await newJob(t.db);
    const steps = Array.from({ length: 20_000 }, (_, i) =>
      step(jobId, `step-${i}`, { status: i % 2 ? "ready" : "pending", input: { i } }),
    );
    await JobStepRepo.createSteps(t.db, steps);
    expect(await stepCount(jobId)).toBe(20_000);
    expect((await JobStepRepo.getReadySteps(t.db, jobId)).length).toBe(10_000);
  });

  it("is all or nothing: a duplicate in the last chunk inserts nothing", async () => {
    const jobId = await newJob(t.db);
    await JobStepRepo.createSteps(t.db, [step(jobId, "taken")]);
    const steps = Array.from({ length: 5000 }, (_, i) => step(jobId, `s${i}`));
    steps.push(step(jobId, "taken"));
    const error = await errorOf(() => JobStepRepo.createSteps(t.db, steps));
    expect(error).toBeInstanceOf(DuplicateStepError);
    expect(error).toMatchObject({ jobId, stepName: "taken" });
    expect(await stepCount(jobId)).toBe(1);
  });

  it("rejects a name used twice in one call before writing", async () => {
    const jobId = await newJob(t.db);
    const error = await errorOf(() =>
      JobStepRepo.createSteps(t.db, [step(jobId, "a"), step(jobId, "b"), step(jobId, "a")]),
    );
    expect(error).toMatchObject({ name: "DuplicateStepError", jobId, stepName: "a" });
    expect(await stepCount(jobId)).toBe(0);
  });

  it("rejects an unknown job", async () => {
    const known = await newJob(t.db);
    const unknown = randomUUID();
    const error = await errorOf(() => JobStepRepo.createSteps(t.db, [step(known, "a"), step(unknown, "b")]));
    expect(error).toBeInstanceOf(JobNotFoundError);
    expect((error as JobNotFoundError).jobId).toBe(unknown);
    expect(await stepCount(known)).toBe(0);
  });

  it.each([
    ["status", { status: "running" }],
    ["actionType", { actionType: "vm" }],
    ["stepName", { stepName: "" }],
    ["actionName", { actionName: " " }],
    ["dependsOn", { dependsOn: "a" }],
    ["continueOnFailure", { continueOnFailure: "yes" }],
  ])("rejects a bad %s before writing", async (field, extra) => {
    const jobId = await newJob(t.db);
    const error = await errorOf(() =>
      JobStepRepo.createSteps(t.db, [step(jobId, "ok"), { ...step(jobId, "bad"), ...(extra as object) } as NewJobStep]),
    );
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).field).toContain(`steps[1].${field}`);
    expect(await stepCount(jobId)).toBe(0);
  });

  it("round-trips hostile strings and JSON unchanged", async () => {
    const hostile = [
      "'; drop table job_step; --",
      'quote " and \\ backslash',
      "ünïcødé 🚀 ストローム",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal placeholder is the point
      "$1 $2 ${x} %s",
      "line\nbreak\ttab",
      "{a,b}",
      "NULL",
    ];
    const jobId = await JobRepo.create(t.db, {
      workspace: hostile[0],
      taskName: hostile[2] as string,
      sourceType: "api",
    });
    const steps = hostile.map((name, i) =>
      step(jobId, name, {
        actionName: hostile[(i + 1) % hostile.length] as string,
        actionImage: name,
        actionSpec: { cmd: name, nested: [name, { k: name }] },
        input: name,
        dependsOn: i ? [hostile[i - 1] as string] : [],
        status: i ? "pending" : "ready",
      }),
    );
    await JobStepRepo.createSteps(t.db, steps);
    const byName = new Map((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => [s.stepName, s]));
    for (const [i, name] of hostile.entries()) {
      expect(byName.get(name)).toMatchObject({
        actionName: hostile[(i + 1) % hostile.length],
        actionImage: name,
        actionSpec: { cmd: name, nested: [name, { k: name }] },
        input: name,
        dependsOn: i ? [hostile[i - 1]] : [],
      });
    }
    expect((await JobRepo.get(t.db, jobId))?.workspace).toBe(hostile[0]);
    const workerId = await registerWorker(t.db);
    expect((await JobStepRepo.getReadySteps(t.db, jobId)).map((s) => s.stepName)).toEqual([hostile[0]]);
    await JobStepRepo.markRunning(t.db, jobId, hostile[0] as string, workerId);
    await JobStepRepo.markFailed(t.db, jobId, hostile[0] as string, hostile.join("|"));
    const failed = (await JobStepRepo.getStepsForJob(t.db, jobId)).find((s) => s.stepName === hostile[0]);
    expect(failed?.errorMessage).toBe(hostile.join("|"));
    await JobRepo.advance(t.db, jobId);
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(true);
  });
});

describe("step lifecycle", () => {
  it("running, then completed with output and timestamps", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const workerId = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "s0000", workerId);
    let [s] = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(s).toMatchObject({ status: "running", workerId, attempts: 1, completedAt: null });
    expect(s?.startedAt).toBeInstanceOf(Date);
    await JobStepRepo.markCompleted(t.db, jobId, "s0000", { artifacts: ["a.tgz"], exitCode: 0 });
    [s] = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(s).toMatchObject({ status: "completed", output: { artifacts: ["a.tgz"], exitCode: 0 } });
    expect(s?.completedAt?.getTime()).toBeGreaterThanOrEqual(s?.startedAt?.getTime() ?? Infinity);
  });

  it("mark failed stores the error message", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const workerId = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "s0000", workerId);
    await JobStepRepo.markFailed(t.db, jobId, "s0000", "exit code 137: killed");
    const [s] = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(s).toMatchObject({ status: "failed", errorMessage: "exit code 137: killed" });
    expect(s?.completedAt).toBeInstanceOf(Date);
    expect(await JobStepRepo.anyStepFailed(t.db, jobId)).toBe(true);
  });

  it("a terminal step never changes again: InvalidTransitionError, nothing written", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const workerId = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "s0000", workerId);
    await JobStepRepo.markCompleted(t.db, jobId, "s0000", { first: true });
    const [before] = await JobStepRepo.getStepsForJob(t.db, jobId);
    for (const attempt of [
      () => JobStepRepo.markCompleted(t.db, jobId, "s0000", { second: true }),
      () => JobStepRepo.markFailed(t.db, jobId, "s0000", "late"),
      () => JobStepRepo.markRunning(t.db, jobId, "s0000", workerId),
    ]) {
      const error = await errorOf(attempt);
      expect(error).toBeInstanceOf(InvalidTransitionError);
      expect(error).toMatchObject({ entity: "step", jobId, stepName: "s0000", currentStatus: "completed" });
    }
    expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]).toEqual(before);
  });

  it("a guarded report from a worker that does not hold the step is refused and writes nothing", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const holder = await registerWorker(t.db);
    const other = await registerWorker(t.db);
    await JobStepRepo.markRunning(t.db, jobId, "s0000", holder);
    const [claimed] = await JobStepRepo.getStepsForJob(t.db, jobId);
    for (const guard of [{ workerId: other }, { workerId: holder, attempt: 2 }]) {
      const error = await errorOf(() => JobStepRepo.markCompleted(t.db, jobId, "s0000", { late: true }, guard));
      expect(error).toBeInstanceOf(StepOwnershipError);
      expect(error).toMatchObject({ jobId, stepName: "s0000", actual: { workerId: holder, attempt: 1 } });
      expect(await errorOf(() => JobStepRepo.markFailed(t.db, jobId, "s0000", "late", guard))).toBeInstanceOf(
        StepOwnershipError,
      );
    }
    expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]).toEqual(claimed);
    // The holder, in its attempt, may report.
    await JobStepRepo.markCompleted(t.db, jobId, "s0000", { ok: true }, { workerId: holder, attempt: 1 });
    // Once terminal: the same report again (a retry whose first reply was
    // lost) succeeds and writes nothing; another outcome is a transition error.
    await JobStepRepo.markCompleted(t.db, jobId, "s0000", { second: true }, { workerId: holder, attempt: 1 });
    expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]?.output).toEqual({ ok: true });
    expect(
      await errorOf(() => JobStepRepo.markFailed(t.db, jobId, "s0000", "late", { workerId: holder, attempt: 1 })),
    ).toBeInstanceOf(InvalidTransitionError);
    expect(
      await errorOf(() => JobStepRepo.markCompleted(t.db, jobId, "s0000", {}, { workerId: "nope" })),
    ).toBeInstanceOf(InvalidInputError);
  });

  it("completing a ready step with a guard is refused (without one, the server may: state-machine.test.ts)", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const guard = { workerId: await registerWorker(t.db), attempt: 1 };
    expect(await errorOf(() => JobStepRepo.markCompleted(t.db, jobId, "s0000", null, guard))).toMatchObject({
      name: "StepOwnershipError",
      currentStatus: "ready",
      actual: { workerId: null, attempt: 0 },
    });
  });

  it("marking an unknown step is StepNotFoundError", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    const workerId = await registerWorker(t.db);
    for (const attempt of [
      () => JobStepRepo.markRunning(t.db, jobId, "nope", workerId),
      () => JobStepRepo.markCompleted(t.db, jobId, "nope"),
      () => JobStepRepo.markFailed(t.db, randomUUID(), "s0000", "x"),
    ]) {
      expect(await errorOf(attempt)).toBeInstanceOf(StepNotFoundError);
    }
  });

  it("markRunning by an unregistered worker is WorkerNotFoundError; the step stays ready", async () => {
    const jobId = await jobWithReadySteps(t.db, 1);
    expect(await errorOf(() => JobStepRepo.markRunning(t.db, jobId, "s0000", randomUUID()))).toBeInstanceOf(
      WorkerNotFoundError,
    );
    expect((await JobStepRepo.getReadySteps(t.db, jobId)).map((s) => s.stepName)).toEqual(["s0000"]);
  });
});

describe("job queries", () => {
  it("all steps terminal, any step failed", async () => {
    const jobId = await jobWithReadySteps(t.db, 3);
    const workerId = await registerWorker(t.db);
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(false);
    expect(await JobStepRepo.anyStepFailed(t.db, jobId)).toBe(false);
    for (const name of ["s0000", "s0001", "s0002"]) await JobStepRepo.markRunning(t.db, jobId, name, workerId);
    await JobStepRepo.markCompleted(t.db, jobId, "s0000");
    await JobStepRepo.markCompleted(t.db, jobId, "s0001");
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(false);
    await JobStepRepo.markFailed(t.db, jobId, "s0002", "boom");
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(true);
    expect(await JobStepRepo.anyStepFailed(t.db, jobId)).toBe(true);
  });

  it("getReadySteps lists only ready steps, oldest first", async () => {
    const jobId = await newJob(t.db);
    await JobStepRepo.createSteps(t.db, [step(jobId, "b", { status: "ready" }), step(jobId, "p")]);
    await JobStepRepo.createSteps(t.db, [step(jobId, "a", { status: "ready" })]);
    expect((await JobStepRepo.getReadySteps(t.db, jobId)).map((s) => s.stepName)).toEqual(["b", "a"]);
  });
});
