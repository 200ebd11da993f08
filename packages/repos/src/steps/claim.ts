import { CONSTRAINTS, isServerActionType, type JobStep, jobStepState, WORKER_ACTION_TYPES } from "@stroem/schema";
import { and, eq, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "../db.js";
import { InvalidInputError, WorkerNotFoundError } from "../errors.js";
import { mapRow } from "../rows.js";
import { directedClaimStatement, preparedClaim, type Routing, WORKER_EXISTS } from "../sql/claim.js";
import { runStatement } from "../statement.js";
import { explainRefusal } from "../transition.js";
import {
  optionalBoolean,
  optionalJson,
  optionalTags,
  requireCapabilities,
  requireInt,
  requireText,
  requireUuid,
} from "../validate.js";

/** Most steps one batch claim may take. */
export const MAX_CLAIM_BATCH = 1000;

const workerMissing = (workerId: string) => (e: { constraint?: string; cause?: unknown }) =>
  e.constraint === CONSTRAINTS.stepWorkerFk ? new WorkerNotFoundError(workerId, { cause: e }) : undefined;

/**
 * Who claims, when the worker has tags: its capabilities (the action types
 * it runs), the tags it registered with (`WorkerRepo.register`) and whether
 * it is exclusive. A worker takes a step when it has the step's ability
 * (`requiredAbility`, default the action type) and every tag the step
 * requires (`requiredTags`); an exclusive worker takes only steps that
 * require all of its tags. Pass the capabilities alone for a worker without tags.
 */
export interface ClaimRouting {
  capabilities: readonly string[];
  tags?: readonly string[];
  exclusive?: boolean;
}

/** A claimer's capabilities or `ClaimRouting`, checked. Throws `InvalidInputError`. */
export function checkRouting(worker: readonly string[] | ClaimRouting): Routing {
  if (Array.isArray(worker) || typeof worker !== "object" || worker === null) {
    const capabilities = requireCapabilities("capabilities", worker, WORKER_ACTION_TYPES);
    return { capabilities, tags: [], exclusive: false };
  }
  const r = worker as ClaimRouting;
  return {
    capabilities: requireCapabilities("capabilities", r.capabilities, WORKER_ACTION_TYPES),
    tags: optionalTags("tags", r.tags),
    exclusive: optionalBoolean("exclusive", r.exclusive) ?? false,
  };
}

/**
 * Claims the oldest ready step the worker may take (`worker`: its
 * capabilities, or its `ClaimRouting` when it has tags): moves it
 * to `running` with `worker_id`, `started_at` and `attempts + 1`, in one
 * statement with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any
 * number of connections never get the same step. The step's job becomes
 * `running` if it was `pending`. Returns `undefined` when nothing is ready.
 * `workerId` is the UUID the worker registered with (`WorkerRepo.register`;
 * make one with `randomUUID()`). Throws `InvalidInputError` for one that is
 * not a UUID, and `WorkerNotFoundError` for an unregistered worker, whether
 * or not a step was ready. The step comes with `dependencyOutputs`: the
 * outputs of the steps it depends on, by name.
 */
export async function claimReadyStep(
  db: Executor,
  worker: readonly string[] | ClaimRouting,
  workerId: string,
): Promise<ClaimedStep | undefined> {
  const [step] = await claimReadySteps(db, worker, workerId, 1);
  return step;
}

/**
 * Claims up to `limit` (1 to 1,000) ready steps in one round trip, oldest
 * ready first (`ready_at`, then job id and step name), the same way as
 * `claimReadyStep` (see `claimStatement` in `sql/claim.ts` for the index it
 * walks). Figures: the repos README.
 */
export async function claimReadySteps(
  db: Executor,
  worker: readonly string[] | ClaimRouting,
  workerId: string,
  limit: number,
): Promise<ClaimedStep[]> {
  const routing = checkRouting(worker);
  requireUuid("workerId", workerId);
  requireInt("limit", limit, 1, MAX_CLAIM_BATCH);
  const { statement, values } = preparedClaim(routing, workerId, limit);
  const rows = await translateErrors(
    db,
    () => runStatement<Record<string, unknown>, typeof values>(db, statement, values),
    workerMissing(workerId),
  );
  if (rows.length === 0) {
    // The same answer whether or not a step was ready: the bug shows before work arrives.
    const known = await translateErrors(db, () => runStatement(db, WORKER_EXISTS, { workerId }));
    if (known.length === 0) throw new WorkerNotFoundError(workerId);
  }
  return rows.map(claimedStep);
}

/**
 * A claimed step: the row, and the outputs of the steps it depends on, by
 * step name (`{}` for a step without dependencies), read in the claim's own
 * statement: what a worker renders the step's inputs from.
 */
export type ClaimedStep = JobStep & { dependencyOutputs: Record<string, unknown> };

/** A claim's row as a `ClaimedStep`. */
export function claimedStep(row: Record<string, unknown>): ClaimedStep {
  // Set on the mapped row rather than spread into a copy: one object per claimed step.
  const step = mapRow(jobStepState, row) as ClaimedStep;
  step.dependencyOutputs = (row.dependency_outputs ?? {}) as Record<string, unknown>;
  return step;
}

/**
 * Moves a specific ready step to `running` for `workerId` (a directed claim,
 * without SKIP LOCKED), starting its job if it was pending. Throws
 * `InvalidTransitionError` unless the step is ready, `StepNotFoundError`,
 * `WorkerNotFoundError`, `InvalidInputError` for a server step (an approval
 * gate: `suspend` it).
 */
export async function markRunning(db: Executor, jobId: string, stepName: string, workerId: string): Promise<void> {
  requireUuid("jobId", jobId);
  requireText("stepName", stepName);
  requireUuid("workerId", workerId);
  const result = await translateErrors(
    db,
    () => db.execute(directedClaimStatement(jobId, stepName, workerId)),
    workerMissing(workerId),
  );
  if (result.rows.length === 0) {
    const [step] = await translateErrors(db, () =>
      db
        .select({ actionType: jobStepState.actionType })
        .from(jobStepState)
        .where(and(eq(jobStepState.jobId, jobId), eq(jobStepState.stepName, stepName))),
    );
    if (step && isServerActionType(step.actionType)) {
      throw new InvalidInputError(
        "stepName",
        `is an ${step.actionType} step: the server decides it, no worker runs it`,
      );
    }
    await explainRefusal(db, { entity: "step", jobId, stepName }, "running");
  }
}

/**
 * Replaces a step's `input` (any JSON value, null included) while no worker
 * holds it: a server that renders a step's inputs from its dependencies'
 * outputs before releasing it. Allowed for a pending, ready or suspended
 * step (a claim that holds the row meanwhile is waited for, then the step
 * is running and the update refused); throws `InvalidTransitionError` for a
 * running or finished one, `StepNotFoundError`, `InvalidInputError`.
 */
export async function updateInput(
  db: Executor,
  ref: { jobId: string; stepName: string },
  input: unknown,
): Promise<void> {
  if (typeof ref !== "object" || ref === null)
    throw new InvalidInputError("ref", "must be an object { jobId, stepName }");
  const jobId = requireUuid("jobId", ref.jobId);
  const stepName = requireText("stepName", ref.stepName);
  const value = JSON.stringify(optionalJson("input", input));
  // The step's live row is locked first (FOR SHARE: a claim holding it is
  // waited for, then the step is running and the update refused).
  const updated = await translateErrors(db, () =>
    db.execute(sql`with l as materialized (
        select s.job_id from step_live s
        where s.job_id = ${jobId}::uuid and s.step_name = ${stepName} and s.status in ('pending', 'ready', 'suspended')
        for share
      )
      update job_step d set input = ${value}::jsonb
      where d.job_id = ${jobId}::uuid and d.step_name = ${stepName} and exists (select 1 from l)
      returning d.job_id`),
  );
  if (updated.rows.length === 0) await explainRefusal(db, { entity: "step", jobId, stepName }, "input updated");
}
