import { MAX_LOOP_ITEMS, type NewFlowStep } from "@stroem/schema";
import { type AuditOptions, auditEventSql, checkActor } from "../audit-repo.js";
import { type Executor, transaction, translateErrors } from "../db.js";
import { InvalidInputError, InvalidTransitionError, JobNotFoundError, StepNotFoundError } from "../errors.js";
import { createManyWithResults, type NewJob } from "../job-repo.js";
import {
  type ConditionRow,
  type ConditionValues,
  DECIDE_CONDITION,
  EXPAND_LOOP,
  type ExpandRow,
  type ExpandValues,
  START_CHILD,
  type StartChildRow,
} from "../sql/server.js";
import { runStatement } from "../statement.js";
import { optionalBoolean, optionalJson } from "../validate.js";
import { checkRef, type GateRef } from "./gates.js";

/**
 * The server's other steps (beside approval gates, `gates.ts`): conditions,
 * child tasks and for_each loops. Each waits, ready, where no worker claims
 * it (`SERVER_ROUTES`, the action type `task`); the server learns it from
 * the `promoted` names of the call that made it ready or from
 * `readyServerSteps`, and decides with one of the functions below. Each
 * locks the job first, so of two servers deciding one step, and of a
 * decision and a cancel, exactly one decides; the others are answered
 * `repeated` or refused (`InvalidTransitionError`) and write nothing. The
 * SQL is in `packages/schema/sql/47_server_steps.sql`.
 */

/** What a decision did to the job: the steps it made ready or skipped, and the job's status after it. */
export interface ServerDecision {
  promoted: string[];
  skipped: string[];
  jobStatus: string;
}

/**
 * The server's decision on a ready step with a `when` (its dependencies are
 * done; it waits on route `@when`): `run: true` releases it to the workers
 * (the claim's ready steps of its ability and tags, `ready_at` now, a
 * wake-up; a `forEach` step then waits for `expandLoop`); `run: false`
 * skips it, and its job advances as after a skip (its dependants see a
 * skipped dependency: they are skipped too unless they continue on
 * failure). Records `step.condition_decided` (by `options.actor`). Throws
 * `InvalidInputError` for a step without `when` (or bad input),
 * `InvalidTransitionError` when it is not waiting for a decision (decided
 * already, not ready yet, finished), `JobNotFoundError` / `StepNotFoundError`.
 */
export async function decideCondition(
  db: Executor,
  ref: GateRef,
  decision: { run: boolean } & AuditOptions,
): Promise<ServerDecision> {
  const { jobId, stepName } = checkRef(ref);
  if (typeof decision !== "object" || decision === null) {
    throw new InvalidInputError("decision", "must be an object { run }");
  }
  const run = optionalBoolean("run", decision.run);
  if (run === undefined) throw new InvalidInputError("run", "must be a boolean");
  const actor = checkActor("actor", decision.actor);
  const [row] = await translateErrors(db, () =>
    runStatement<ConditionRow, ConditionValues>(db, DECIDE_CONDITION, {
      jobId,
      stepName,
      run,
      actorType: actor.type,
      actorId: actor.id,
    }),
  );
  const r = row as ConditionRow;
  if (r.result === "ok") {
    return { promoted: r.promoted ?? [], skipped: r.skipped ?? [], jobStatus: r.job_status ?? "running" };
  }
  if (r.result === "not_found") {
    throw r.job_status === null ? new JobNotFoundError(jobId) : new StepNotFoundError(jobId, stepName);
  }
  if (r.result === "not_conditional") {
    throw new InvalidInputError("stepName", "has no `when` condition: only such a step waits for a decision");
  }
  throw new InvalidTransitionError("step", jobId, stepName, waiting(r.step_status, r.route), run ? "ready" : "skipped");
}

/** What `startChild` did. */
export interface StartedChild {
  childJobId: string;
  /** The step had its child already (a second call): nothing was written, `childJobId` is that child. */
  repeated: boolean;
}

/**
 * Starts a child job for a ready `task` step, in one transaction: the step
 * becomes `suspended` (it waits for its child; its job `running`) and the
 * child is created (as `JobRepo.createWithSteps` creates a job, its
 * `job.created` event included) with `parentJobId` / `parentStepName`
 * naming the step; `job.child_started` is recorded under the parent.
 * However the child ends (completed, failed, cancelled, timed out), the
 * step ends with it, once, in the statement that ends the child: completed
 * with `{ childJobId, status, output }`, else failed with an error naming
 * the child; the parent advances from there. Cancelling the parent cancels
 * its unfinished children first (`JobRepo.cancel`). A second call for the
 * same step writes nothing and answers its child (`repeated`). The child
 * takes no `idempotencyKey` (its step is its key). Throws, having written
 * nothing: `InvalidInputError` (another action type, a bad child),
 * `FlowValidationError`, `InvalidTransitionError` (not ready: its `when`
 * undecided, or its job finished), `JobNotFoundError` / `StepNotFoundError`.
 */
export async function startChild(
  db: Executor,
  ref: GateRef,
  child: { job: NewJob; steps: readonly NewFlowStep[] },
  options: AuditOptions = {},
): Promise<StartedChild> {
  const { jobId, stepName } = checkRef(ref);
  if (typeof child !== "object" || child === null || typeof child.job !== "object" || child.job === null) {
    throw new InvalidInputError("child", "must be an object { job, steps }");
  }
  if (child.job.idempotencyKey !== undefined && child.job.idempotencyKey !== null) {
    throw new InvalidInputError("child.job.idempotencyKey", "is not taken by a child job: its parent step is its key");
  }
  const actor = checkActor("actor", options?.actor);
  return transaction(db, async (tx) => {
    const [row] = await translateErrors(tx, () =>
      runStatement<StartChildRow, { jobId: string; stepName: string }>(tx, START_CHILD, { jobId, stepName }),
    );
    const r = row as StartChildRow;
    if (r.result === "repeated" && r.child_job_id) return { childJobId: r.child_job_id, repeated: true };
    if (r.result === "not_found") {
      throw r.job_status === null ? new JobNotFoundError(jobId) : new StepNotFoundError(jobId, stepName);
    }
    if (r.result === "not_task") {
      throw new InvalidInputError("stepName", `is a ${r.action_type} step: only a task step starts a child job`);
    }
    if (r.result !== "ok") {
      const status = r.step_status === "ready" && r.job_status ? `ready (its job is ${r.job_status})` : r.step_status;
      throw new InvalidTransitionError("step", jobId, stepName, status ?? "?", "suspended");
    }
    const [created] = await createManyWithResults(tx, [{ job: child.job, steps: child.steps }], options, {
      jobId,
      stepName,
      depth: r.depth ?? 0,
    });
    const childJobId = (created as { jobId: string }).jobId;
    await translateErrors(tx, () =>
      tx.execute(
        auditEventSql({
          actor,
          action: "job.child_started",
          entityType: "job",
          entityId: jobId,
          details: { stepName, childJobId },
        }),
      ),
    );
    return { childJobId, repeated: false };
  });
}

/** What `expandLoop` did. */
export interface ExpandedLoop extends ServerDecision {
  /** The instances the loop has (created now, or, `repeated`, before). */
  instances: number;
  /** The loop was expanded already: nothing was written. */
  repeated: boolean;
}

/**
 * Expands a ready `forEach` step into one instance per item, in one
 * statement whatever their number (up to 10,000): `step[0]`, `step[1]`,
 * ... with the loop step's action, input, routing, retry policy and
 * timeout, and `loopSource`, `loopIndex`, `loopTotal`, `loopItem` (the
 * item). Each is claimed, retried and timed out on its own; all are ready
 * at once, or with `sequential` instance i+1 once i is done (after a
 * failure the rest are skipped, unless the loop step continues on
 * failure). The loop step's dependants wait for it, and it waits for every
 * instance: when the last ends it completes with their outputs in index
 * order (`null` for one skipped), or, if any failed, fails naming them (as
 * soon as one fails, unless it continues on failure: the usual rule for a
 * failed dependency); its failure fails the job unless it continues on
 * failure. An empty list completes it at once with `[]`. Records
 * `step.expanded`. A second call answers `repeated` and writes nothing.
 * Throws `InvalidInputError` (not a `forEach` step, items not an array of
 * JSON values or over 10,000), `InvalidTransitionError` (not ready: its
 * `when` undecided, finished, cancelled), `JobNotFoundError` / `StepNotFoundError`.
 */
export async function expandLoop(
  db: Executor,
  ref: GateRef,
  items: readonly unknown[],
  options: { sequential?: boolean } & AuditOptions = {},
): Promise<ExpandedLoop> {
  const { jobId, stepName } = checkRef(ref);
  if (!Array.isArray(items)) throw new InvalidInputError("items", "must be an array");
  if (items.length > MAX_LOOP_ITEMS) {
    throw new InvalidInputError("items", `must hold at most ${MAX_LOOP_ITEMS} items, got ${items.length}`);
  }
  const json = JSON.stringify(optionalJson("items", items));
  const sequential = optionalBoolean("sequential", options?.sequential) ?? false;
  const actor = checkActor("actor", options?.actor);
  const [row] = await translateErrors(db, () =>
    runStatement<ExpandRow, ExpandValues>(db, EXPAND_LOOP, {
      jobId,
      stepName,
      items: json,
      sequential,
      actorType: actor.type,
      actorId: actor.id,
    }),
  );
  const r = row as ExpandRow;
  if (r.result === "ok" || r.result === "repeated") {
    return {
      instances: r.instances ?? 0,
      repeated: r.result === "repeated",
      promoted: r.promoted ?? [],
      skipped: r.skipped ?? [],
      jobStatus: r.job_status ?? "running",
    };
  }
  if (r.result === "not_found") {
    throw r.job_status === null ? new JobNotFoundError(jobId) : new StepNotFoundError(jobId, stepName);
  }
  if (r.result === "not_loop") {
    throw new InvalidInputError("stepName", "has no `forEach`: only a loop step is expanded");
  }
  throw new InvalidTransitionError("step", jobId, stepName, r.step_status ?? "?", "expanded");
}

/** A refused condition's step, as the error shows it (a ready step already released names its route). */
function waiting(status: string | null, route: string | null): string {
  if (status === "ready" && route && route !== "@when") return "ready (released already)";
  return status ?? "?";
}
