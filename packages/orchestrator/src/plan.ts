import { FlowValidationError } from "./errors.js";
import type { AdvancePlan, Flow, FlowProblem, StepStatus, StepStatusView } from "./types.js";
import { validateFlow } from "./validate.js";

const TERMINAL: ReadonlySet<StepStatus> = new Set(["completed", "failed", "skipped", "cancelled"]);

/** True for the statuses a step never leaves. */
export function isTerminal(status: StepStatus): boolean {
  return TERMINAL.has(status);
}

/** `ready` for a step without dependencies, `pending` for the rest: what job creation writes. */
export function initialStatus(flow: Flow, stepName: string): "pending" | "ready" {
  const step = flow[stepName];
  if (!step) throw new FlowValidationError([unknownStep(stepName)]);
  return (step.dependsOn?.length ?? 0) === 0 ? "ready" : "pending";
}

/** Every step of a (valid) flow with its initial status, in topological order. */
export function initialSteps(flow: Flow): Array<{ stepName: string; status: "pending" | "ready" }> {
  return validateFlow(flow).map((stepName) => ({ stepName, status: initialStatus(flow, stepName) }));
}

/**
 * Decides, from the current status of every step of a job, which pending
 * steps become ready, which can never run and are skipped, and the job's
 * outcome once that is applied. The rules, applied to a fixed point in one
 * call (skips cascade through the whole graph at once):
 * - a pending step is promoted when every dependency is completed or skipped
 *   and at least one completed (or it has none);
 * - a pending step whose dependencies are all skipped is skipped;
 * - a pending step with a failed dependency is skipped, unless it has
 *   `continueOnFailure`: then it is promoted once every dependency is
 *   terminal, whatever their outcome;
 * - the job is `running` while a step is not terminal; then `failed` if a
 *   failed step lacks `continueOnFailure`, else `completed`.
 * Pure. Throws `FlowValidationError` if the flow is invalid or the steps and
 * the flow do not name the same steps.
 */
export function planAdvance(steps: readonly StepStatusView[], flow: Flow): AdvancePlan {
  const order = validateFlow(flow);
  const status = new Map<string, StepStatus>();
  const problems: FlowProblem[] = [];
  for (const s of steps) {
    if (!Object.hasOwn(flow, s.stepName)) problems.push(unknownStep(s.stepName));
    status.set(s.stepName, s.status);
  }
  for (const name of order) {
    if (!status.has(name)) {
      problems.push({ kind: "missing-step", step: name, message: `flow step "${name}" has no status` });
    }
  }
  if (problems.length > 0) throw new FlowValidationError(problems);

  const promote: string[] = [];
  const skip: string[] = [];
  // Topological order: a step's dependencies are final before it is decided,
  // so one pass reaches the fixed point.
  for (const name of order) {
    if (status.get(name) !== "pending") continue;
    const step = flow[name] as Flow[string];
    const deps = (step.dependsOn ?? []).map((d) => status.get(d) as StepStatus);
    let decision: "promote" | "skip" | undefined;
    if (step.continueOnFailure) {
      if (deps.every(isTerminal)) decision = "promote";
    } else if (deps.includes("failed")) {
      decision = "skip";
    } else if (deps.length === 0) {
      decision = "promote";
    } else if (deps.every((d) => d === "skipped" || d === "cancelled")) {
      // A cancelled dependency did not run, as a skipped one (only a cancelled job has them).
      decision = "skip";
    } else if (deps.every((d) => d === "completed" || d === "skipped" || d === "cancelled")) {
      decision = "promote";
    }
    if (decision === "promote") {
      promote.push(name);
      status.set(name, "ready");
    } else if (decision === "skip") {
      skip.push(name);
      status.set(name, "skipped");
    }
  }

  let jobStatus: AdvancePlan["jobStatus"] = "completed";
  for (const name of order) {
    const s = status.get(name) as StepStatus;
    if (!isTerminal(s)) {
      jobStatus = "running";
      break;
    }
    if (s === "failed" && !flow[name]?.continueOnFailure) jobStatus = "failed";
  }
  return { promote, skip, jobStatus };
}

function unknownStep(step: string): FlowProblem {
  return { kind: "unknown-step", step, message: `step "${step}" is not in the flow` };
}
