import { describe, expect, it } from "vitest";
import { type Flow, type FlowProblem, FlowValidationError, flowFromEntries, validateFlow } from "../src/index.js";

function problemsOf(fn: () => unknown): FlowProblem[] {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(FlowValidationError);
    return [...(error as FlowValidationError).problems];
  }
  throw new Error("expected a FlowValidationError");
}

const diamond: Flow = {
  step1: { action: "a" },
  step2: { action: "a", dependsOn: ["step1"] },
  step4: { action: "a", dependsOn: ["step1"] },
  step3: { action: "a", dependsOn: ["step2", "step4"] },
};

describe("validateFlow", () => {
  it("returns a topological order", () => {
    const order = validateFlow(diamond);
    expect(order).toHaveLength(4);
    for (const [name, step] of Object.entries(diamond)) {
      for (const dep of step.dependsOn ?? []) expect(order.indexOf(dep)).toBeLessThan(order.indexOf(name));
    }
    expect(order[0]).toBe("step1");
    expect(order[3]).toBe("step3");
  });

  it("rejects an empty flow", () => {
    expect(problemsOf(() => validateFlow({})).map((p) => p.kind)).toEqual(["empty-flow"]);
  });

  it("rejects empty names and missing actions", () => {
    const kinds = problemsOf(() => validateFlow({ "": { action: "x" }, b: { action: " " } })).map((p) => p.kind);
    expect(kinds).toEqual(["empty-name", "missing-action"]);
  });

  it("rejects unknown, repeated and self dependencies, all at once", () => {
    const problems = problemsOf(() =>
      validateFlow({
        a: { action: "x", dependsOn: ["nope"] },
        b: { action: "x", dependsOn: ["b"] },
        c: { action: "x", dependsOn: ["a", "a"] },
      }),
    );
    expect(problems.map((p) => p.kind)).toEqual(["unknown-dependency", "self-dependency", "duplicate-dependency"]);
    expect(problems[0]?.message).toBe('step "a" depends on unknown step "nope"');
  });

  it("reports each cycle as its path in run order", () => {
    const problems = problemsOf(() =>
      validateFlow({
        a: { action: "x", dependsOn: ["c"] },
        b: { action: "x", dependsOn: ["a"] },
        c: { action: "x", dependsOn: ["b"] },
        d: { action: "x", dependsOn: ["e"] },
        e: { action: "x", dependsOn: ["d"] },
        f: { action: "x", dependsOn: ["a"] }, // behind a cycle, not on one
        g: { action: "x" },
      }),
    );
    expect(problems.map((p) => p.message)).toEqual(["cycle: a -> b -> c -> a", "cycle: d -> e -> d"]);
  });

  it("validates a 10,000-step chain and a 10,000-step fan-in without recursion", () => {
    const chain: Flow = {};
    for (let i = 0; i < 10_000; i++) chain[`s${i}`] = { action: "x", dependsOn: i ? [`s${i - 1}`] : [] };
    expect(validateFlow(chain)).toHaveLength(10_000);
    const fan: Flow = { root: { action: "x" } };
    const leaves: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      fan[`l${i}`] = { action: "x", dependsOn: ["root"] };
      leaves.push(`l${i}`);
    }
    fan.join = { action: "x", dependsOn: leaves };
    expect(validateFlow(fan).at(-1)).toBe("join");
    // A 10,000-step cycle is found too.
    const ring: Flow = {};
    for (let i = 0; i < 10_000; i++) ring[`r${i}`] = { action: "x", dependsOn: [`r${(i + 1) % 10_000}`] };
    const [cycle] = problemsOf(() => validateFlow(ring));
    expect(cycle?.kind === "cycle" && cycle.path.length).toBe(10_001);
  });
});

describe("flowFromEntries", () => {
  it("rejects a repeated step name", () => {
    const problems = problemsOf(() =>
      flowFromEntries([
        { stepName: "a", action: "x" },
        { stepName: "a", action: "y" },
      ]),
    );
    expect(problems).toEqual([{ kind: "duplicate-name", step: "a", message: 'step name "a" is used twice' }]);
  });

  it("keeps the step fields", () => {
    expect(flowFromEntries([{ stepName: "a", action: "x", dependsOn: [], continueOnFailure: true }])).toEqual({
      a: { action: "x", dependsOn: [], continueOnFailure: true },
    });
  });
});
