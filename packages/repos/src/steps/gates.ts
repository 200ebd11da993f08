import { type JobStep, jobStepState, SERVER_ACTION_TYPES, SERVER_ROUTES } from "@stroem/schema";
import { type AuditOptions, checkActor } from "../audit-repo.js";
import { type Executor, translateErrors } from "../db.js";
import { InvalidInputError, InvalidTransitionError, JobNotFoundError, StepNotFoundError } from "../errors.js";
import { mapRow } from "../rows.js";
import {
  DECIDE_GATE,
  type DecideRow,
  type DecideValues,
  READY_SERVER_STEPS,
  SUSPEND_STEP,
  type SuspendRow,
  type SuspendValues,
} from "../sql/gates.js";
import { runStatement } from "../statement.js";
import { optionalJson, optionalText, requireInt, requireText, requireUuid } from "../validate.js";

/**
 * Approval gates: steps of a server action type (`approval`, in
 * `SERVER_ACTION_TYPES`) that no worker claims (a worker's capabilities
 * cannot name them; `markRunning` refuses them). The server finds them
 * ready (`readyServerSteps`, or the `promoted` names the report that made
 * them ready returns), suspends each (`suspend`), and a person decides
 * (`approve`, `reject`). A suspended gate with `timeoutSecs` fails once it
 * has waited that long (`sweepTimeouts`); its job's cancel cancels it. Each
 * decision locks the job row first, so of an approve, a reject, a timeout
 * and a cancel that meet, exactly one decides and the others are refused
 * (`InvalidTransitionError` with the status it found) and write nothing.
 * The SQL is in `packages/schema/sql/45_gates.sql`.
 */

/** A step reference: the job and the step's name. */
export interface GateRef {
  jobId: string;
  stepName: string;
}

/** What a decision did to the job: the steps it made ready or skipped, and the job's status after it. */
export interface GateDecision {
  promoted: string[];
  skipped: string[];
  jobStatus: string;
  /** The gate's output as recorded (what it was suspended with, the decider, `approved`, `decidedAt`). */
  output: unknown;
}

/** Most server steps one `readyServerSteps` call returns. */
export const MAX_SERVER_STEPS = 1000;

/**
 * The oldest ready steps that wait for the server (due now), at most
 * `limit` (1 to 1,000, default 100), oldest `ready_at` first: approval
 * gates to `suspend`, `task` steps to `startChild`, steps with a `when`
 * to `decideCondition` (`whenCondition` set, whatever their action type),
 * `forEach` steps to `expandLoop`. A read (no lock): a server that crashed
 * between a step becoming ready and its decision finds it here on its next
 * pass, and the same decision by two servers is taken once (`repeated`, or
 * `InvalidTransitionError`, for the second).
 */
export async function readyServerSteps(db: Executor, options: { limit?: number } = {}): Promise<JobStep[]> {
  const limit = options?.limit === undefined ? 100 : requireInt("limit", options.limit, 1, MAX_SERVER_STEPS);
  const rows = await translateErrors(db, () =>
    runStatement<Record<string, unknown>, { actionTypes: string[]; limit: number }>(db, READY_SERVER_STEPS, {
      actionTypes: [...SERVER_ACTION_TYPES, SERVER_ROUTES.condition, SERVER_ROUTES.loop],
      limit,
    }),
  );
  return rows.map((r) => mapRow(jobStepState, r));
}

/**
 * `ready -> suspended` for a server step of an unfinished job: it waits for
 * a decision from now (`suspendedAt`), its job is `running` if it was
 * pending, and `output` (any JSON: what the approver is shown) is recorded
 * on it. Records `step.suspended` (by `options.actor`, default the system).
 * Returns `repeated: true`, writing nothing, for a step suspended already.
 * Throws `InvalidInputError` for a worker's step (or bad input),
 * `InvalidTransitionError` for any other status or a finished job,
 * `JobNotFoundError` / `StepNotFoundError`.
 */
export async function suspend(
  db: Executor,
  ref: GateRef,
  options: { output?: unknown } & AuditOptions = {},
): Promise<{ repeated: boolean; suspendedAt: Date }> {
  const { jobId, stepName } = checkRef(ref);
  const output = options?.output === undefined ? null : JSON.stringify(optionalJson("output", options.output));
  const actor = checkActor("actor", options?.actor);
  const [row] = await translateErrors(db, () =>
    runStatement<SuspendRow, SuspendValues>(db, SUSPEND_STEP, {
      jobId,
      stepName,
      output,
      actorType: actor.type,
      actorId: actor.id,
    }),
  );
  const r = row as SuspendRow;
  if (r.result === "ok" || r.result === "repeated") {
    return { repeated: r.result === "repeated", suspendedAt: new Date(r.suspended_at as string) };
  }
  if (r.result === "not_found") {
    throw r.job_status === null ? new JobNotFoundError(jobId) : new StepNotFoundError(jobId, stepName);
  }
  if (r.result === "not_server") {
    throw new InvalidInputError(
      "stepName",
      r.action_type === "task"
        ? "is a task step: startChild suspends it, with its child job"
        : `is a ${r.action_type} step: workers claim it, only approval gates are suspended`,
    );
  }
  throw new InvalidTransitionError("step", jobId, stepName, stepOrJob(r), "suspended");
}

/**
 * `suspended -> completed`: the gate is approved by `by` (a user id or
 * e-mail; recorded as the audit event's actor and in the output as
 * `approvedBy`, with `input` when given: what the approver filled in), and
 * its job advances (its dependants are promoted). Records `step.approved`.
 * Throws `InvalidTransitionError` when it is not suspended (approved or
 * rejected already, timed out, cancelled, never suspended: `currentStatus`
 * says which), `JobNotFoundError` / `StepNotFoundError`, `InvalidInputError`.
 */
export async function approve(
  db: Executor,
  ref: GateRef,
  decision: { by: string; input?: unknown },
): Promise<GateDecision> {
  const { jobId, stepName } = checkRef(ref);
  const by = requireText("by", decision?.by);
  const payload: Record<string, unknown> = { approvedBy: by };
  if (decision.input !== undefined) payload.input = optionalJson("input", decision.input);
  return decide(db, { jobId, stepName }, true, payload, null, by);
}

/**
 * `suspended -> failed`: the gate is rejected by `by`, with `reason` (its
 * error; default "rejected by <by>"); its job advances as after a failure
 * (it fails unless the gate has `continueOnFailure`; no retry). Records
 * `step.rejected` (with the reason). Throws as `approve`.
 */
export async function reject(
  db: Executor,
  ref: GateRef,
  decision: { by: string; reason?: string },
): Promise<GateDecision> {
  const { jobId, stepName } = checkRef(ref);
  const by = requireText("by", decision?.by);
  const reason = optionalText("reason", decision.reason) ?? `rejected by ${by}`;
  return decide(db, { jobId, stepName }, false, { rejectedBy: by }, reason, by);
}

async function decide(
  db: Executor,
  { jobId, stepName }: GateRef,
  approve: boolean,
  payload: Record<string, unknown>,
  error: string | null,
  by: string,
): Promise<GateDecision> {
  const [row] = await translateErrors(db, () =>
    runStatement<DecideRow, DecideValues>(db, DECIDE_GATE, {
      jobId,
      stepName,
      approve,
      output: JSON.stringify(payload),
      error,
      actorType: "user",
      actorId: by,
    }),
  );
  const r = row as DecideRow;
  if (r.result === "ok") {
    return {
      promoted: r.promoted ?? [],
      skipped: r.skipped ?? [],
      jobStatus: r.job_status ?? "running",
      output: r.output,
    };
  }
  if (r.result === "not_found") {
    throw r.job_status === null ? new JobNotFoundError(jobId) : new StepNotFoundError(jobId, stepName);
  }
  if (r.result === "not_gate") {
    throw new InvalidInputError("stepName", "is no approval gate: only a gate is approved or rejected");
  }
  throw new InvalidTransitionError("step", jobId, stepName, r.step_status ?? "?", approve ? "completed" : "failed");
}

/** A step reference, checked (a UUID and a step name). Throws `InvalidInputError`. */
export function checkRef(ref: GateRef): GateRef {
  if (typeof ref !== "object" || ref === null)
    throw new InvalidInputError("ref", "must be an object { jobId, stepName }");
  return { jobId: requireUuid("jobId", ref.jobId), stepName: requireText("stepName", ref.stepName) };
}

/** The status that refused a suspend: the step's, or its finished job's. */
function stepOrJob(r: SuspendRow): string {
  if (r.step_status === "ready" && r.job_status) return `ready (its job is ${r.job_status})`;
  return r.step_status ?? "?";
}
