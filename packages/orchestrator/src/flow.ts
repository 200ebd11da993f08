import { FlowValidationError } from "./errors.js";
import type { Flow, FlowProblem, NamedFlowStep } from "./types.js";
import { stepAction } from "./validate.js";

/**
 * The one conversion from a list of named steps (job creation's input, the
 * stored step rows) to a flow. Keeps only the graph (`actionName`,
 * `dependsOn`, `continueOnFailure`) and rejects repeated names: a record
 * cannot hold them, so this is where they are caught. Does not validate the
 * graph itself (`validateFlow` does).
 */
export function toFlow(steps: readonly NamedFlowStep[]): Flow {
  const flow: Flow = {};
  const problems: FlowProblem[] = [];
  for (const step of steps) {
    const { stepName, dependsOn, continueOnFailure } = step;
    if (Object.hasOwn(flow, stepName)) {
      problems.push({ kind: "duplicate-name", step: stepName, message: `step name "${stepName}" is used twice` });
      continue;
    }
    flow[stepName] = {
      actionName: stepAction(step) ?? "",
      dependsOn: dependsOn ?? [],
      continueOnFailure: continueOnFailure ?? false,
    };
  }
  if (problems.length > 0) throw new FlowValidationError(problems);
  return flow;
}
