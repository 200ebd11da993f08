import fc from "fast-check";
import type { Flow, StepStatus } from "../src/index.js";

/** Step statuses by name, and the list `planAdvance` takes. */
export type States = Record<string, StepStatus>;
export const view = (states: States) => Object.entries(states).map(([stepName, status]) => ({ stepName, status }));

/** Random DAGs of 1 to 25 steps (edges only to earlier steps), some with continueOnFailure. */
export const dagArb = fc.integer({ min: 1, max: 25 }).chain((n) =>
  fc
    .tuple(
      fc.array(fc.array(fc.boolean(), { minLength: n, maxLength: n }), { minLength: n, maxLength: n }),
      fc.array(fc.boolean(), { minLength: n, maxLength: n }),
    )
    .map(([matrix, cof]) => {
      const flow: Flow = {};
      for (let i = 0; i < n; i++) {
        const deps: string[] = [];
        for (let j = 0; j < i; j++) if (matrix[i]?.[j]) deps.push(`s${j}`);
        flow[`s${i}`] = { actionName: "x", dependsOn: deps, continueOnFailure: cof[i] === true && i % 3 === 0 };
      }
      return flow;
    }),
);
