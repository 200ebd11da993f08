import type { FlowProblem } from "./types.js";

/** A flow that cannot run, with every problem found (not just the first). */
export class FlowValidationError extends Error {
  override name = "FlowValidationError";
  readonly problems: readonly FlowProblem[];

  constructor(problems: readonly FlowProblem[]) {
    super(
      problems.length === 1
        ? `invalid flow: ${problems[0]?.message}`
        : `invalid flow (${problems.length} problems):\n${problems.map((p) => `  - ${p.message}`).join("\n")}`,
    );
    this.problems = problems;
  }
}
