import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decideStep,
  type Flow,
  initialSteps,
  isTerminal,
  jobStatusFromCounts,
  planAdvance,
  type StepStatus,
} from "../src/index.js";
import { dagArb, type States, view } from "./dags.js";

/**
 * The incremental advance the database runs (migration 0002), on counts:
 * each finished step updates only its dependants' counts, decides them with
 * `decideStep`, and cascades skips. Returns what it promoted and skipped.
 */
function makeEngine(flow: Flow) {
  const dependants = new Map<string, string[]>(Object.keys(flow).map((n) => [n, []]));
  for (const [name, step] of Object.entries(flow)) for (const d of step.dependsOn ?? []) dependants.get(d)?.push(name);
  const counts = new Map(
    Object.entries(flow).map(([n, s]) => [n, { unfinished: s.dependsOn?.length ?? 0, failed: 0, completed: 0 }]),
  );
  const job = { unfinished: Object.keys(flow).length, failed: 0 };
  return {
    job,
    finish(states: States, name: string) {
      const promoted: string[] = [];
      const skipped: string[] = [];
      job.unfinished--;
      if (states[name] === "failed" && !flow[name]?.continueOnFailure) job.failed++;
      let level: Array<[string, StepStatus]> = (dependants.get(name) ?? []).map((d) => [d, states[name] as StepStatus]);
      while (level.length > 0) {
        const next: Array<[string, StepStatus]> = [];
        for (const [target, outcome] of level) {
          const c = counts.get(target);
          if (!c || states[target] !== "pending") continue;
          c.unfinished--;
          if (outcome === "failed") c.failed++;
          if (outcome === "completed") c.completed++;
          const decision = decideStep({
            dependencies: flow[target]?.dependsOn?.length ?? 0,
            ...c,
            continueOnFailure: flow[target]?.continueOnFailure ?? false,
          });
          if (decision === "ready") {
            states[target] = "ready";
            promoted.push(target);
          } else if (decision === "skipped") {
            states[target] = "skipped";
            skipped.push(target);
            job.unfinished--;
            for (const d of dependants.get(target) ?? []) next.push([d, "skipped"]);
          }
        }
        level = next;
      }
      return { promoted: promoted.sort(), skipped: skipped.sort() };
    },
  };
}

describe("decideStep", () => {
  it("follows the rules on hand-picked counts", () => {
    const c = { dependencies: 2, unfinished: 0, failed: 0, completed: 0, continueOnFailure: false };
    expect(decideStep({ ...c, dependencies: 0 })).toBe("ready");
    expect(decideStep({ ...c, completed: 2 })).toBe("ready");
    expect(decideStep({ ...c, completed: 1 })).toBe("ready"); // one completed, one skipped
    expect(decideStep(c)).toBe("skipped"); // both skipped
    expect(decideStep({ ...c, unfinished: 1, failed: 1 })).toBe("skipped"); // no waiting for the other
    expect(decideStep({ ...c, unfinished: 1, completed: 1 })).toBe("pending");
    expect(decideStep({ ...c, unfinished: 1, failed: 1, continueOnFailure: true })).toBe("pending");
    expect(decideStep({ ...c, failed: 2, continueOnFailure: true })).toBe("ready");
    expect(jobStatusFromCounts({ unfinished: 1, failed: 1 })).toBe("running");
    expect(jobStatusFromCounts({ unfinished: 0, failed: 1 })).toBe("failed");
    expect(jobStatusFromCounts({ unfinished: 0, failed: 0 })).toBe("completed");
  });
});

describe("advancing on counts agrees with planAdvance", () => {
  it("after every finished step of random runs on random DAGs: same promotions, skips and job status", () => {
    fc.assert(
      fc.property(dagArb, fc.array(fc.boolean(), { minLength: 200, maxLength: 200 }), (flow, coin) => {
        const states: States = Object.fromEntries(initialSteps(flow).map((s) => [s.stepName, s.status]));
        const engine = makeEngine(flow);
        for (let flips = 0; flips < 1000; flips++) {
          const ready = Object.keys(states).find((n) => states[n] === "ready");
          if (!ready) break;
          states[ready] = coin[flips % coin.length] ? "completed" : "failed";
          const plan = planAdvance(view(states), flow);
          const got = engine.finish(states, ready);
          expect(got).toEqual({ promoted: [...plan.promote].sort(), skipped: [...plan.skip].sort() });
          expect(jobStatusFromCounts(engine.job)).toBe(plan.jobStatus);
        }
        for (const s of Object.values(states)) expect(isTerminal(s)).toBe(true);
      }),
      { numRuns: 300 },
    );
  }, 60_000); // fast-check runs 300 DAGs; on 2 busy cores this has taken up to 11 s.
});
