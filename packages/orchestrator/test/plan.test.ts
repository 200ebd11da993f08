import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type Flow,
  FlowValidationError,
  initialStatus,
  initialSteps,
  isTerminal,
  planAdvance,
  type StepStatus,
} from "../src/index.js";
import { dagArb, type States, view } from "./dags.js";

const diamond: Flow = {
  step1: { actionName: "a" },
  step2: { actionName: "a", dependsOn: ["step1"] },
  step4: { actionName: "a", dependsOn: ["step1"] },
  step3: { actionName: "a", dependsOn: ["step2", "step4"] },
};

describe("initial statuses", () => {
  it("makes roots ready and the rest pending", () => {
    expect(initialSteps(diamond)).toEqual([
      { stepName: "step1", status: "ready" },
      { stepName: "step2", status: "pending" },
      { stepName: "step4", status: "pending" },
      { stepName: "step3", status: "pending" },
    ]);
    expect(initialStatus(diamond, "step3")).toBe("pending");
    expect(() => initialStatus(diamond, "nope")).toThrow(FlowValidationError);
  });
});

describe("planAdvance", () => {
  it("diamond: completing step1 promotes exactly step2 and step4, then both promote step3", () => {
    const s: States = { step1: "completed", step2: "pending", step4: "pending", step3: "pending" };
    expect(planAdvance(view(s), diamond)).toEqual({ promote: ["step2", "step4"], skip: [], jobStatus: "running" });
    // One parent done, the other still running: the join waits.
    expect(planAdvance(view({ ...s, step2: "completed", step4: "running" }), diamond).promote).toEqual([]);
    expect(planAdvance(view({ ...s, step2: "completed", step4: "completed" }), diamond)).toEqual({
      promote: ["step3"],
      skip: [],
      jobStatus: "running",
    });
    expect(
      planAdvance(view({ step1: "completed", step2: "completed", step4: "completed", step3: "completed" }), diamond),
    ).toEqual({ promote: [], skip: [], jobStatus: "completed" });
  });

  it("skips a whole deep chain below a failure in one call", () => {
    const flow: Flow = {};
    const s: States = {};
    for (let i = 0; i < 500; i++) {
      flow[`s${i}`] = { actionName: "x", dependsOn: i ? [`s${i - 1}`] : [] };
      s[`s${i}`] = i === 0 ? "failed" : "pending";
    }
    const plan = planAdvance(view(s), flow);
    expect(plan.skip).toHaveLength(499);
    expect(plan.promote).toEqual([]);
    expect(plan.jobStatus).toBe("failed");
  });

  it("skips a wide fan-out below a failure, and keeps siblings running", () => {
    const flow: Flow = { root: { actionName: "x" }, other: { actionName: "x" } };
    const s: States = { root: "failed", other: "running" };
    for (let i = 0; i < 1000; i++) {
      flow[`c${i}`] = { actionName: "x", dependsOn: ["root"] };
      s[`c${i}`] = "pending";
    }
    const plan = planAdvance(view(s), flow);
    expect(plan.skip).toHaveLength(1000);
    expect(plan.jobStatus).toBe("running");
  });

  it("a failed dependency skips a join even while its other parent still runs", () => {
    expect(
      planAdvance(view({ step1: "completed", step2: "failed", step4: "running", step3: "pending" }), diamond),
    ).toEqual({ promote: [], skip: ["step3"], jobStatus: "running" });
  });

  it("continueOnFailure waits for every dependency to be terminal, then runs even if none completed", () => {
    const flow: Flow = {
      a: { actionName: "x" },
      b: { actionName: "x" },
      notify: { actionName: "n", dependsOn: ["a", "b"], continueOnFailure: true },
    };
    expect(planAdvance(view({ a: "failed", b: "running", notify: "pending" }), flow).promote).toEqual([]);
    expect(planAdvance(view({ a: "failed", b: "skipped", notify: "pending" }), flow)).toEqual({
      promote: ["notify"],
      skip: [],
      jobStatus: "running",
    });
    // Its own failure does not fail the job; the others' does.
    expect(planAdvance(view({ a: "completed", b: "completed", notify: "failed" }), flow).jobStatus).toBe("completed");
    expect(planAdvance(view({ a: "failed", b: "completed", notify: "completed" }), flow).jobStatus).toBe("failed");
  });

  it("all-skipped dependencies cascade; skipped plus completed promotes", () => {
    const flow: Flow = {
      a: { actionName: "x" },
      b: { actionName: "x", dependsOn: ["a"] },
      c: { actionName: "x", dependsOn: ["b"] },
      d: { actionName: "x" },
      e: { actionName: "x", dependsOn: ["c", "d"] },
      f: { actionName: "x", dependsOn: ["c"] },
    };
    const plan = planAdvance(
      view({ a: "failed", b: "pending", c: "pending", d: "completed", e: "pending", f: "pending" }),
      flow,
    );
    expect(plan).toEqual({ promote: ["e"], skip: ["b", "c", "f"], jobStatus: "running" });
  });

  it("leaves non-pending steps alone and reports running while any is not terminal", () => {
    expect(
      planAdvance(view({ step1: "ready", step2: "pending", step4: "pending", step3: "pending" }), diamond),
    ).toEqual({
      promote: [],
      skip: [],
      jobStatus: "running",
    });
  });

  it("rejects steps and flows that do not match", () => {
    expect(() => planAdvance(view({ step1: "ready", extra: "pending" }), diamond)).toThrow(/not in the flow/);
    expect(() => planAdvance(view({ step1: "ready" }), diamond)).toThrow(/has no status/);
  });
});

// ---------------------------------------------------------------------------
// Properties over random DAGs.

/** A random DAG: step i may depend only on steps before it, so no cycles. */
describe("planAdvance properties", () => {
  it("a simulated run ends with every step terminal, ordered, and the outcome the rules give", () => {
    fc.assert(
      fc.property(dagArb, fc.array(fc.boolean(), { minLength: 200, maxLength: 200 }), (flow, coin) => {
        const states: States = Object.fromEntries(initialSteps(flow).map((s) => [s.stepName, s.status]));
        const finishedAt = new Map<string, number>();
        const startedAt = new Map<string, number>();
        let clock = 0;
        let flips = 0;
        const apply = () => {
          const plan = planAdvance(view(states), flow);
          for (const n of plan.promote) states[n] = "ready";
          for (const n of plan.skip) {
            states[n] = "skipped";
            finishedAt.set(n, clock++);
          }
          return plan;
        };
        let plan = apply();
        for (let guard = 0; guard < 1000; guard++) {
          const ready = Object.keys(states).find((n) => states[n] === "ready");
          if (!ready) break;
          startedAt.set(ready, clock++);
          states[ready] = coin[flips++ % coin.length] ? "completed" : "failed";
          finishedAt.set(ready, clock++);
          plan = apply();
        }
        // Every step terminal, and the plan agrees the job is over.
        for (const s of Object.values(states)) expect(isTerminal(s)).toBe(true);
        expect(plan.jobStatus).not.toBe("running");
        for (const [name, step] of Object.entries(flow)) {
          // No step ran before all its dependencies were terminal.
          if (startedAt.has(name)) {
            for (const dep of step.dependsOn ?? []) {
              expect(finishedAt.get(dep)).toBeLessThan(startedAt.get(name) as number);
            }
          }
          // A skipped step has a failed or skipped dependency (hence a failed ancestor).
          if (states[name] === "skipped") {
            expect((step.dependsOn ?? []).some((d) => states[d] === "failed" || states[d] === "skipped")).toBe(true);
            expect(hasFailedAncestor(flow, states, name)).toBe(true);
          }
        }
        const expected = Object.entries(states).some(([n, s]) => s === "failed" && !flow[n]?.continueOnFailure)
          ? "failed"
          : "completed";
        expect(plan.jobStatus).toBe(expected);
      }),
      { numRuns: 300 },
    );
  }, 60_000);

  it("is idempotent: applying a plan and planning again changes nothing", () => {
    const stateArb = fc.constantFrom<StepStatus>("pending", "ready", "running", "completed", "failed", "skipped");
    fc.assert(
      fc.property(dagArb, fc.array(stateArb, { minLength: 25, maxLength: 25 }), (flow, picks) => {
        const states: States = {};
        Object.keys(flow).forEach((n, i) => {
          states[n] = picks[i] as StepStatus;
        });
        const first = planAdvance(view(states), flow);
        for (const n of first.promote) states[n] = "ready";
        for (const n of first.skip) states[n] = "skipped";
        const second = planAdvance(view(states), flow);
        expect(second.promote).toEqual([]);
        expect(second.skip).toEqual([]);
        expect(second.jobStatus).toBe(first.jobStatus);
      }),
      { numRuns: 300 },
    );
  }, 60_000);
});

function hasFailedAncestor(flow: Flow, states: States, name: string): boolean {
  const seen = new Set<string>();
  const stack = [...(flow[name]?.dependsOn ?? [])];
  while (stack.length) {
    const n = stack.pop() as string;
    if (seen.has(n)) continue;
    seen.add(n);
    if (states[n] === "failed") return true;
    stack.push(...(flow[n]?.dependsOn ?? []));
  }
  return false;
}
