import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError, InvalidTransitionError, JobRepo, JobStepRepo, StepNotFoundError } from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

/**
 * Inputs from outputs: a claim returns, with each step, the outputs of the
 * steps it depends on (in the claim's statement), and a server may replace
 * a step's input before a worker holds it (`updateInput`).
 */
const t = useTestDb();
let workerId: string;

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  workerId = await registerWorker(t.db, ["shell"]);
});

/** a -> b, c -> d; a step's output names it. */
function diamond() {
  return JobRepo.createWithSteps(t.db, { taskName: "pipeline", sourceType: "api" }, [
    { stepName: "a", actionName: "x", actionType: "shell" },
    { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
    { stepName: "c", actionName: "x", actionType: "shell", dependsOn: ["a"] },
    { stepName: "d", actionName: "x", actionType: "shell", dependsOn: ["b", "c"], input: { template: "{{b}}" } },
  ]);
}

describe("a claim returns its dependencies' outputs", () => {
  it("each claimed step with the outputs of its own parents, by name; {} without parents", async () => {
    const jobId = await diamond();
    const [a] = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10);
    expect(a).toMatchObject({ stepName: "a", dependencyOutputs: {} });
    await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId, attempt: 1 }, { sha: "abc" });
    const [b] = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1);
    expect(b).toMatchObject({ stepName: "b", dependencyOutputs: { a: { sha: "abc" } } });
    // reportAndClaim: the report of b, then the claim of c (ready before the report), with its parent's output.
    const { next } = await JobStepRepo.reportAndClaim(
      t.db,
      { jobId, stepName: "b", workerId, attempt: 1, outcome: "completed", output: { image: "app:1" } },
      ["shell"],
    );
    expect(next).toMatchObject({ stepName: "c", dependencyOutputs: { a: { sha: "abc" } } });
    await JobStepRepo.complete(t.db, { jobId, stepName: "c", workerId, attempt: 1 }, [1, 2]);
    // The join: both parents' outputs, in a batch claim.
    const [d] = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 10);
    expect(d).toMatchObject({
      stepName: "d",
      input: { template: "{{b}}" },
      dependencyOutputs: { b: { image: "app:1" }, c: [1, 2] },
    });
    // A parent without output (null) and one claim of a single step.
    const other = await JobRepo.createWithSteps(t.db, { taskName: "p", sourceType: "api" }, [
      { stepName: "x", actionName: "x", actionType: "shell" },
      { stepName: "y", actionName: "x", actionType: "shell", dependsOn: ["x"] },
    ]);
    const x = await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId);
    await JobStepRepo.complete(t.db, { jobId: other, stepName: x?.stepName ?? "", workerId, attempt: 1 });
    expect(await JobStepRepo.claimReadyStep(t.db, ["shell"], workerId)).toMatchObject({
      stepName: "y",
      dependencyOutputs: { x: null },
    });
  });
});

describe("updateInput", () => {
  it("replaces the input of a pending or ready step; a claim then returns it", async () => {
    const jobId = await diamond();
    await JobStepRepo.updateInput(t.db, { jobId, stepName: "d" }, { rendered: "app:1" });
    await JobStepRepo.updateInput(t.db, { jobId, stepName: "a" }, null);
    const [a] = await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1);
    expect(a).toMatchObject({ stepName: "a", input: null });
    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.find((s) => s.stepName === "d")?.input).toEqual({ rendered: "app:1" });
  });

  it("refuses, writing nothing, once a worker holds the step or it finished; unknown steps; bad input", async () => {
    const jobId = await diamond();
    await JobStepRepo.claimReadySteps(t.db, ["shell"], workerId, 1);
    const running = await errorOf(() => JobStepRepo.updateInput(t.db, { jobId, stepName: "a" }, { late: true }));
    expect(running).toBeInstanceOf(InvalidTransitionError);
    expect(running).toMatchObject({ currentStatus: "running" });
    await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId, attempt: 1 });
    expect(await errorOf(() => JobStepRepo.updateInput(t.db, { jobId, stepName: "a" }, 1))).toMatchObject({
      currentStatus: "completed",
    });
    expect(await errorOf(() => JobStepRepo.updateInput(t.db, { jobId, stepName: "zz" }, 1))).toBeInstanceOf(
      StepNotFoundError,
    );
    expect(
      await errorOf(() => JobStepRepo.updateInput(t.db, { jobId, stepName: "b" }, { n: BigInt(1) })),
    ).toBeInstanceOf(InvalidInputError);
    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.map((s) => s.input)).toEqual([null, null, null, { template: "{{b}}" }]);
  });
});
