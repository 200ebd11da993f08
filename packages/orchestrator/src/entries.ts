import { FlowValidationError } from "./errors.js";
import type { Flow, FlowProblem, FlowStep } from "./types.js";

/** One step as a list entry: a flow step with its name. */
export interface FlowEntry extends FlowStep {
  stepName: string;
}

/**
 * Builds a flow from a list of named steps (as job creation and the stored
 * job graph have them), rejecting repeated names: a record cannot hold them,
 * so this is where they are caught. Does not validate the graph itself.
 */
export function flowFromEntries(entries: readonly FlowEntry[]): Flow {
  const flow: Flow = {};
  const problems: FlowProblem[] = [];
  for (const { stepName, ...step } of entries) {
    if (Object.hasOwn(flow, stepName)) {
      problems.push({ kind: "duplicate-name", step: stepName, message: `step name "${stepName}" is used twice` });
      continue;
    }
    flow[stepName] = step;
  }
  if (problems.length > 0) throw new FlowValidationError(problems);
  return flow;
}
