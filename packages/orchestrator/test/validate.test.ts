import { describe, expect, it } from "vitest";
import { type Flow, type FlowProblem, FlowValidationError, toFlow, validateFlow } from "../src/index.js";

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
  step1: { actionName: "a" },
  step2: { actionName: "a", dependsOn: ["step1"] },
  step4: { actionName: "a", dependsOn: ["step1"] },
  step3: { actionName: "a", dependsOn: ["step2", "step4"] },
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
    const kinds = problemsOf(() => validateFlow({ "": { actionName: "x" }, b: { actionName: " " } })).map(
      (p) => p.kind,
    );
    expect(kinds).toEqual(["empty-name", "missing-action"]);
  });

  it("rejects unknown, repeated and self dependencies, all at once", () => {
    const problems = problemsOf(() =>
      validateFlow({
        a: { actionName: "x", dependsOn: ["nope"] },
        b: { actionName: "x", dependsOn: ["b"] },
        c: { actionName: "x", dependsOn: ["a", "a"] },
      }),
    );
    expect(problems.map((p) => p.kind)).toEqual(["unknown-dependency", "self-dependency", "duplicate-dependency"]);
    expect(problems[0]?.message).toBe('step "a" depends on unknown step "nope"');
  });

  it("reports each cycle as its path in run order", () => {
    const problems = problemsOf(() =>
      validateFlow({
        a: { actionName: "x", dependsOn: ["c"] },
        b: { actionName: "x", dependsOn: ["a"] },
        c: { actionName: "x", dependsOn: ["b"] },
        d: { actionName: "x", dependsOn: ["e"] },
        e: { actionName: "x", dependsOn: ["d"] },
        f: { actionName: "x", dependsOn: ["a"] }, // behind a cycle, not on one
        g: { actionName: "x" },
      }),
    );
    expect(problems.map((p) => p.message)).toEqual(["cycle: a -> b -> c -> a", "cycle: d -> e -> d"]);
  });

  it("validates a 10,000-step chain and a 10,000-step fan-in without recursion", () => {
    const chain: Flow = {};
    for (let i = 0; i < 10_000; i++) chain[`s${i}`] = { actionName: "x", dependsOn: i ? [`s${i - 1}`] : [] };
    expect(validateFlow(chain)).toHaveLength(10_000);
    const fan: Flow = { root: { actionName: "x" } };
    const leaves: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      fan[`l${i}`] = { actionName: "x", dependsOn: ["root"] };
      leaves.push(`l${i}`);
    }
    fan.join = { actionName: "x", dependsOn: leaves };
    expect(validateFlow(fan).at(-1)).toBe("join");
    // A 10,000-step cycle is found too.
    const ring: Flow = {};
    for (let i = 0; i < 10_000; i++) ring[`r${i}`] = { actionName: "x", dependsOn: [`r${(i + 1) % 10_000}`] };
    const [cycle] = problemsOf(() => validateFlow(ring));
    expect(cycle?.kind === "cycle" && cycle.path.length).toBe(10_001);
  }, 60_000); // milliseconds when idle; took over 5 s (the default timeout) on 2 cores at load 22.
});

describe("toFlow", () => {
  it("rejects a repeated step name", () => {
    const problems = problemsOf(() =>
      toFlow([
        { stepName: "a", actionName: "x" },
        { stepName: "a", actionName: "y" },
      ]),
    );
    expect(problems).toEqual([{ kind: "duplicate-name", step: "a", message: 'step name "a" is used twice' }]);
  });

  it("keeps the step fields", () => {
    expect(toFlow([{ stepName: "a", actionName: "x", dependsOn: [], continueOnFailure: true }])).toEqual({
      a: { actionName: "x", dependsOn: [], continueOnFailure: true },
    });
  });
});
