import { randomUUID } from "node:crypto";
import { type Flow, FlowValidationError } from "@stroem/orchestrator";
import type { NewJobStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { describe, expect, it } from "vitest";
import { InvalidInputError, JobRepo, JobStepRepo, WorkerRepo } from "../src/index.js";
import { errorOf } from "./helpers.js";

/**
 * The design note's walkthrough ("Creating and Executing a Job"), verbatim
 * apart from syntax, and the calls its test list names. One deviation: the
 * note claims with a fresh UUID and never registers it; here the worker is
 * registered first (`WorkerRepo.register`, also the note's call), because a
 * claim by an unregistered worker is refused (`WorkerNotFoundError`).
 */
const t = useTestDb();

/** The note's `NewJobStep`: no `dependsOn` (the note passes the graph to `promote_ready_steps`). */
const noteStep = (jobId: string, stepName: string, status: "ready" | "pending", extra: Partial<NewJobStep> = {}) =>
  ({
    jobId,
    stepName,
    actionName: `${stepName}-action`,
    actionType: "shell",
    actionImage: null,
    actionSpec: { cmd: `run ${stepName}` },
    input: null,
    status,
    ...extra,
  }) as NewJobStep;

async function noteWorker() {
  const workerId = randomUUID();
  await WorkerRepo.register(t.db, { workerId, name: "w1", capabilities: ["shell"] });
  return workerId;
}

async function statuses(jobId: string) {
  return Object.fromEntries((await JobStepRepo.getStepsForJob(t.db, jobId)).map((s) => [s.stepName, s.status]));
}

describe("the design note's walkthrough", () => {
  it("create, create steps, claim, mark completed, promote by the flow", async () => {
    const jobId = await JobRepo.create(t.db, {
      workspace: "default",
      taskName: "my-task",
      mode: "distributed",
      input: { env: "prod" },
      sourceType: "user",
      sourceId: null,
    });
    const steps: NewJobStep[] = [
      {
        jobId,
        stepName: "checkout",
        actionName: "git-clone",
        actionType: "shell",
        actionImage: null,
        actionSpec: { cmd: "git clone ..." },
        input: null,
        status: "ready",
      },
      {
        jobId,
        stepName: "build",
        actionName: "npm-build",
        actionType: "shell",
        actionImage: "node:20",
        actionSpec: { cmd: "npm ci && npm run build" },
        input: null,
        status: "pending",
      },
    ];
    await JobStepRepo.createSteps(t.db, steps);

    const workerId = await noteWorker();
    const step = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
    expect(step).toMatchObject({ stepName: "checkout", status: "running", workerId });

    // Execute step, then mark completed
    await JobStepRepo.markCompleted(t.db, jobId, step?.stepName ?? "", null);

    // Promote dependent steps (the flow in the note's and Strøm's shape: `action`, `dependsOn`)
    const flow: Flow = {
      checkout: { action: "git-clone" },
      build: { action: "npm-build", dependsOn: ["checkout"] },
    };
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, flow)).toEqual(["build"]);
    expect(await statuses(jobId)).toEqual({ checkout: "completed", build: "ready" });
    expect(await JobStepRepo.getReadySteps(t.db, jobId)).toMatchObject([{ stepName: "build" }]);
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(false);

    const next = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
    await JobStepRepo.markCompleted(t.db, jobId, next?.stepName ?? "", { artefact: "dist/" });
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, flow)).toEqual([]);
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(true);
    expect(await JobStepRepo.anyStepFailed(t.db, jobId)).toBe(false);
    expect(await JobRepo.get(t.db, jobId)).toMatchObject({ status: "completed" });
  });

  it("a diamond created without dependsOn: the join waits for both inputs, decided by the flow given", async () => {
    const jobId = await JobRepo.create(t.db, { taskName: "diamond", sourceType: "user" });
    await JobStepRepo.createSteps(t.db, [
      noteStep(jobId, "step1", "ready"),
      noteStep(jobId, "step2", "pending"),
      noteStep(jobId, "step3", "pending"),
      noteStep(jobId, "step4", "pending"),
    ]);
    const flow: Flow = {
      step1: { action: "a" },
      step2: { action: "b", dependsOn: ["step1"] },
      step4: { action: "d", dependsOn: ["step1"] },
      step3: { action: "c", dependsOn: ["step2", "step4"] },
    };
    const workerId = await noteWorker();
    const claimAndComplete = async () => {
      const s = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
      if (!s) throw new Error("nothing to claim");
      await JobStepRepo.markCompleted(t.db, jobId, s.stepName, null);
      return s.stepName;
    };
    expect(await claimAndComplete()).toBe("step1");
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, flow)).toEqual(["step2", "step4"]);
    expect(await statuses(jobId)).toEqual({ step1: "completed", step2: "ready", step3: "pending", step4: "ready" });

    await claimAndComplete();
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, flow)).toEqual([]); // one input still running
    expect((await statuses(jobId)).step3).toBe("pending");
    await claimAndComplete();
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, flow)).toEqual(["step3"]);

    // The graph the flow gave is now the job's own: a report alone advances it too.
    const last = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
    expect(last?.dependsOn).toEqual(["step2", "step4"]);
    await JobStepRepo.complete(t.db, { jobId, stepName: "step3" });
    expect(await JobRepo.get(t.db, jobId)).toMatchObject({ status: "completed" });
  });

  it("skipUnreachableSteps by the flow: below a failure, the whole cascade", async () => {
    const jobId = await JobRepo.create(t.db, { taskName: "chain", sourceType: "user" });
    await JobStepRepo.createSteps(t.db, [
      noteStep(jobId, "lint", "ready"),
      noteStep(jobId, "package", "pending"),
      noteStep(jobId, "deploy", "pending"),
      noteStep(jobId, "notify", "pending"),
    ]);
    const flow: Flow = {
      lint: { action: "lint" },
      package: { action: "package", dependsOn: ["lint"] },
      deploy: { action: "deploy", dependsOn: ["package"] },
      notify: { action: "notify", dependsOn: ["deploy"], continueOnFailure: true },
    };
    const workerId = await noteWorker();
    const s = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
    await JobStepRepo.markFailed(t.db, jobId, s?.stepName ?? "", "lint failed");
    expect(await JobStepRepo.skipUnreachableSteps(t.db, jobId, flow)).toEqual(["package", "deploy"]);
    expect(await statuses(jobId)).toEqual({ lint: "failed", package: "skipped", deploy: "skipped", notify: "ready" });
    expect(await JobStepRepo.anyStepFailed(t.db, jobId)).toBe(true);
  });

  it("a flow that disagrees with the graph the rows hold is refused, writing nothing", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "user" }, [
      { stepName: "a", action: "x", actionType: "shell" },
      { stepName: "b", action: "x", actionType: "shell", dependsOn: ["a"] },
      { stepName: "c", action: "x", actionType: "shell", dependsOn: ["a"] },
    ]);
    await JobStepRepo.markCompleted(t.db, jobId, "a", null);
    const other: Flow = {
      a: { action: "x" },
      b: { action: "x", dependsOn: ["a"] },
      c: { action: "x", dependsOn: ["b"] },
    };
    const error = await errorOf(() => JobStepRepo.promoteReadySteps(t.db, jobId, other));
    expect(error).toBeInstanceOf(FlowValidationError);
    expect((error as FlowValidationError).problems).toEqual([
      expect.objectContaining({ kind: "graph-mismatch", step: "c" }),
    ]);
    // Other names, or an invalid flow: refused the same way.
    for (const bad of [
      { a: { action: "x" }, b: { action: "x", dependsOn: ["a"] } },
      { a: { action: "x", dependsOn: ["c"] }, b: { action: "x" }, c: { action: "x", dependsOn: ["a"] } },
    ] as Flow[]) {
      expect(await errorOf(() => JobStepRepo.promoteReadySteps(t.db, jobId, bad))).toBeInstanceOf(FlowValidationError);
    }
    expect(await statuses(jobId)).toEqual({ a: "completed", b: "pending", c: "pending" });
    // The flow the rows hold advances them.
    const same: Flow = {
      a: { action: "x" },
      b: { action: "x", dependsOn: ["a"] },
      c: { actionName: "x", dependsOn: ["a"] },
    };
    expect(await JobStepRepo.promoteReadySteps(t.db, jobId, same)).toEqual(["b", "c"]);
  });

  it("`action` is accepted as the note's name for `actionName`; two that differ are refused", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "user" }, [
      { stepName: "a", action: "git-clone", actionType: "shell" },
    ]);
    expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]?.actionName).toBe("git-clone");
    expect(
      await errorOf(() =>
        JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "user" }, [
          { stepName: "a", action: "x", actionName: "y", actionType: "shell" },
        ]),
      ),
    ).toMatchObject({ name: "InvalidInputError", field: "steps[0].action" });
    expect(
      await errorOf(() => JobStepRepo.promoteReadySteps(t.db, jobId, { a: { action: "x", actionName: "y" } })),
    ).toMatchObject({
      name: "FlowValidationError",
      problems: [expect.objectContaining({ kind: "conflicting-action" })],
    });
    expect(await errorOf(() => JobStepRepo.promoteReadySteps(t.db, "nope", { a: { action: "x" } }))).toBeInstanceOf(
      InvalidInputError,
    );
  });

  it("the unguarded marks take a pending step, as the note's tests and Strøm's server do", async () => {
    const jobId = await JobRepo.create(t.db, { taskName: "t", sourceType: "user" });
    await JobStepRepo.createSteps(t.db, [noteStep(jobId, "a", "pending"), noteStep(jobId, "b", "pending")]);
    await JobStepRepo.markCompleted(t.db, jobId, "a", { by: "server" });
    await JobStepRepo.markFailed(t.db, jobId, "b", "ruled out");
    expect(await statuses(jobId)).toEqual({ a: "completed", b: "failed" });
    expect(await JobStepRepo.allStepsTerminal(t.db, jobId)).toBe(true);
    expect(await JobStepRepo.anyStepFailed(t.db, jobId)).toBe(true);
    expect(await JobRepo.advance(t.db, jobId)).toMatchObject({ jobStatus: "failed" });
  });
});

describe("a job finished by hand ends its open steps with it", () => {
  it("markCompleted / markFailed: pending and ready steps cancelled, running ones asked to stop, in one statement", async () => {
    for (const mark of ["markCompleted", "markFailed"] as const) {
      const jobId = await JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "user" }, [
        { stepName: "a", action: "x", actionType: "pod" },
        { stepName: "b", action: "x", actionType: "pod" },
        { stepName: "c", action: "x", actionType: "pod", dependsOn: ["a"] },
      ]);
      const workerId = await noteWorker(); // (only this test's steps are pods)
      await JobStepRepo.markRunning(t.db, jobId, "a", workerId);
      const result =
        mark === "markCompleted"
          ? await JobRepo.markCompleted(t.db, jobId, { decided: "by hand" })
          : await JobRepo.markFailed(t.db, jobId);
      expect(result).toEqual({ cancelled: ["b", "c"], cancelRequested: ["a"], children: [] });
      expect(await statuses(jobId)).toEqual({ a: "running", b: "cancelled", c: "cancelled" });
      expect(await JobRepo.get(t.db, jobId)).toMatchObject({
        status: mark === "markCompleted" ? "completed" : "failed",
        ...(mark === "markCompleted" ? { output: { decided: "by hand" } } : {}),
      });
      // No worker runs a step of the finished job; the running one hears it from its heartbeat.
      expect(await JobStepRepo.claimReadyStep(t.db, ["pod"], workerId)).toBeUndefined();
      expect(await WorkerRepo.heartbeat(t.db, workerId)).toMatchObject([{ jobId, stepName: "a", attempt: 1 }]);
      // Its late report is recorded and moves nothing.
      expect(await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId, attempt: 1 })).toMatchObject({
        promoted: [],
        jobStatus: mark === "markCompleted" ? "completed" : "failed",
      });
    }
  });
});
