import {
  ACTION_TYPES,
  type ActionType,
  CONSTRAINTS,
  isServerActionType,
  jobStep,
  type NewFlowStep,
  type NewJobStep,
  RETRY_LIMITS,
  RETRY_STRATEGIES,
  STEP_INITIAL_STATUSES,
  stepLive,
  WORKER_ACTION_TYPES,
} from "@stroem/schema";
import { sql } from "drizzle-orm";
import { type Executor, transaction, translateErrors } from "../db.js";
import {
  type ConstraintViolationError,
  DuplicateStepError,
  InvalidInputError,
  InvalidTransitionError,
  JobNotFoundError,
} from "../errors.js";
import { stepRoutes } from "../sql/create.js";
import { notifyReadyStatement, recountStatement } from "../sql/report.js";
import {
  optionalBoolean,
  optionalJson,
  optionalTags,
  optionalText,
  requireInt,
  requireOneOf,
  requireText,
  requireUuid,
} from "../validate.js";

/** Rows per INSERT: at most 14 bound values a row, so 28,000 per statement, below Postgres' 65,535. */
const INSERT_CHUNK = 2000;

/** A flow step's fields, checked; `at` names it in errors (`steps[3]`). Throws `InvalidInputError`. */
export function checkFlowStep(s: NewFlowStep, at: string) {
  if (typeof s !== "object" || s === null) throw new InvalidInputError(at, "must be an object");
  const dependsOn = s.dependsOn ?? [];
  if (!Array.isArray(dependsOn)) throw new InvalidInputError(`${at}.dependsOn`, "must be an array of step names");
  for (const [j, d] of dependsOn.entries()) requireText(`${at}.dependsOn[${j}]`, d);
  const actionType = requireOneOf(`${at}.actionType`, s.actionType, ACTION_TYPES);
  return {
    stepName: requireText(`${at}.stepName`, s.stepName),
    actionName: checkActionName(s, at),
    actionType,
    ...checkRouting(s, actionType, at),
    actionImage: optionalText(`${at}.actionImage`, s.actionImage),
    actionSpec: optionalJson(`${at}.actionSpec`, s.actionSpec),
    input: optionalJson(`${at}.input`, s.input),
    dependsOn: [...dependsOn] as string[],
    continueOnFailure: optionalBoolean(`${at}.continueOnFailure`, s.continueOnFailure) ?? false,
    ...checkRetryPolicy(s, at),
    when: optionalExpression(`${at}.when`, s.when),
    forEach: optionalExpression(`${at}.forEach`, s.forEach),
  };
}

/** Longest `when` / `forEach` expression a step stores. */
export const MAX_STEP_EXPRESSION = 4096;

/** A server-side expression (`when`, `forEach`): null, or 1 to 4,096 characters. */
function optionalExpression(field: string, value: unknown): string | null {
  const text = optionalText(field, value);
  if (text !== null && text.length > MAX_STEP_EXPRESSION) {
    throw new InvalidInputError(field, `must be at most ${MAX_STEP_EXPRESSION} characters, got ${text.length}`);
  }
  return text;
}

/**
 * A step's routing: the ability it needs (a worker action type; null: its
 * own action type) and the tags a worker must have. A server step (an
 * approval gate) is claimed by no worker: it takes neither.
 */
function checkRouting(s: NewFlowStep, actionType: ActionType, at: string) {
  const requiredAbility =
    s.requiredAbility === undefined || s.requiredAbility === null
      ? null
      : requireOneOf(`${at}.requiredAbility`, s.requiredAbility, WORKER_ACTION_TYPES);
  const requiredTags = optionalTags(`${at}.requiredTags`, s.requiredTags);
  if (isServerActionType(actionType) && (requiredAbility !== null || requiredTags.length > 0)) {
    throw new InvalidInputError(
      requiredAbility !== null ? `${at}.requiredAbility` : `${at}.requiredTags`,
      `is not for an ${actionType} step: the server decides it, no worker claims it`,
    );
  }
  return { requiredAbility, requiredTags };
}

/** The SQL of a new step's route (`stroem_step_route`), for an insert. */
export function routeOf(r: {
  actionType: string;
  requiredAbility: string | null;
  requiredTags: readonly string[];
  when: string | null;
  forEach: string | null;
}) {
  return sql`stroem_step_route(${r.requiredAbility ?? r.actionType}::text, ${sql.param(r.requiredTags)}::text[], ${r.when}::text, ${r.forEach}::text)`;
}

/** `actionName`, or `action` (the design note's name for it); both only when they agree. */
function checkActionName(s: NewFlowStep, at: string): string {
  if (s.actionName !== undefined && s.action !== undefined && s.actionName !== s.action) {
    throw new InvalidInputError(
      `${at}.action`,
      `names another action than actionName (${JSON.stringify(s.action)} vs ${JSON.stringify(s.actionName)}): give one`,
    );
  }
  return s.actionName !== undefined || s.action === undefined
    ? requireText(`${at}.actionName`, s.actionName)
    : requireText(`${at}.action`, s.action);
}

/** A step's retry policy with its defaults (no retry; 10 s doubling, no jitter). Throws `InvalidInputError`. */
function checkRetryPolicy(s: NewFlowStep, at: string) {
  const jitter = s.retryJitter ?? 0;
  if (typeof jitter !== "number" || !Number.isFinite(jitter) || jitter < 0 || jitter > 1) {
    throw new InvalidInputError(`${at}.retryJitter`, `must be a number from 0 to 1, got ${JSON.stringify(jitter)}`);
  }
  return {
    maxRetries: requireInt(`${at}.maxRetries`, s.maxRetries ?? 0, 0, RETRY_LIMITS.maxRetries),
    retryBackoffSecs: requireInt(`${at}.retryBackoffSecs`, s.retryBackoffSecs ?? 10, 0, RETRY_LIMITS.maxBackoffSecs),
    retryStrategy: requireOneOf(`${at}.retryStrategy`, s.retryStrategy ?? "exponential", RETRY_STRATEGIES),
    retryJitter: jitter,
    timeoutSecs:
      s.timeoutSecs === undefined || s.timeoutSecs === null
        ? null
        : requireInt(`${at}.timeoutSecs`, s.timeoutSecs, 1, 2 ** 31 - 1),
  };
}

/**
 * Inserts steps into existing jobs, all or nothing: one transaction (a
 * savepoint when `db` is already one) of multi-row INSERTs of at most 2,000
 * rows, so a call may carry tens of thousands of steps. Each step gets the
 * status the caller gives (`pending` or `ready`; ready ones get `ready_at =
 * now()`); then the touched jobs' graph counts are recomputed from their
 * steps (`stroem_recount`), so steps may be added to a job over several
 * calls. Prefer `JobRepo.createWithSteps` / `createMany`, which derive the
 * statuses from the flow. An empty list is a no-op. Throws, having written
 * nothing: `InvalidInputError` for a bad field, `DuplicateStepError` for a
 * name used twice in the call or already in the job, `JobNotFoundError`,
 * `InvalidTransitionError` for a cancelled job. Locks the jobs' rows first.
 */
export async function createSteps(db: Executor, steps: readonly NewJobStep[]): Promise<void> {
  if (steps.length === 0) return;
  const rows = steps.map((s, i) => {
    const at = `steps[${i}]`;
    const status = requireOneOf(`${at}.status`, s?.status, STEP_INITIAL_STATUSES);
    return {
      ...checkFlowStep(s, at),
      jobId: requireUuid(`${at}.jobId`, s.jobId),
      status,
      readyAt: status === "ready" ? sql`now()` : null,
    };
  });
  const seen = new Set<string>();
  for (const r of rows) {
    const key = `${r.jobId}\u0000${r.stepName}`;
    if (seen.has(key)) throw new DuplicateStepError(r.jobId, r.stepName);
    seen.add(key);
  }
  const jobIds = [...new Set(rows.map((r) => r.jobId))];
  const readyRoutes = new Set<string>();
  await translateErrors(
    db,
    () =>
      transaction(db, async (tx) => {
        // The jobs' locks first (the lock order: deeper jobs first, a child
        // before its parent, then by job id); a cancelled job takes no new
        // steps (they would be claimable).
        const depths = await tx.execute<{ job_id: string }>(
          sql`select u.job_id from unnest(${sql.param(jobIds)}::uuid[]) as u(job_id)
            left join job_live l on l.job_id = u.job_id order by coalesce(l.depth, 0) desc, u.job_id`,
        );
        const locked = await tx.execute<{ job_id: string; status: string | null; single: boolean | null }>(
          sql`select u.job_id, l.status, l.single
            from unnest(${sql.param(depths.rows.map((r) => r.job_id))}::uuid[]) with ordinality as u(job_id, ord)
            cross join lateral stroem_lock_job(u.job_id) l
            order by u.ord`,
        );
        const missing = locked.rows.find((j) => j.status === null);
        if (missing) throw new JobNotFoundError(missing.job_id);
        const cancelled = locked.rows.find((j) => j.status === "cancelled");
        if (cancelled) throw new InvalidTransitionError("job", cancelled.job_id, undefined, "cancelled", "running");
        // A job of one step gains steps: it gets the job_live row a job of
        // several steps has (its counts set by the recount below).
        const single = locked.rows.filter((j) => j.single).map((j) => j.job_id);
        if (single.length > 0) {
          await tx.execute(sql`insert into job_live (job_id, status, started_at)
            select s.job_id, case when s.job_started_at is null then 'pending' else 'running' end, s.job_started_at
            from step_live s where s.job_id = any(${sql.param(single)}::uuid[])`);
        }
        for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
          const chunk = rows.slice(i, i + INSERT_CHUNK);
          await tx.insert(jobStep).values(
            chunk.map(({ status: _s, readyAt: _r, when, ...definition }) => ({
              ...definition,
              whenCondition: when,
              requiredTags: sql`stroem_tags(${sql.param(definition.requiredTags)}::text[])`,
            })),
          );
          const inserted = await tx
            .insert(stepLive)
            .values(
              chunk.map((r) => ({
                jobId: r.jobId,
                stepName: r.stepName,
                actionType: r.actionType,
                route: routeOf(r),
                status: r.status,
                readyAt: r.readyAt,
                maxRetries: r.maxRetries,
                depsTotal: r.dependsOn.length,
                continueOnFailure: r.continueOnFailure,
                timeoutSecs: r.timeoutSecs,
              })),
            )
            .returning({ route: stepLive.route, status: stepLive.status });
          for (const r of inserted) if (r.status === "ready") readyRoutes.add(r.route);
        }
        const tagged = rows.filter((r) => r.requiredTags.length > 0);
        if (tagged.length > 0) {
          const steps = JSON.stringify(
            tagged.map((r) => ({
              action_type: r.actionType,
              required_ability: r.requiredAbility,
              required_tags: r.requiredTags,
            })),
          );
          await tx.execute(
            sql`with ${stepRoutes(
              sql`jsonb_to_recordset(${steps}::jsonb) as x(action_type text, required_ability text, required_tags text[])`,
            )} select 1`,
          );
        }
        await tx.execute(recountStatement(jobIds));
        // The wake-ups' payloads: the abilities of the routes the ready steps got (stroem_step_route).
        const readyTypes = [...new Set([...readyRoutes].map((route) => route.split("\u001f")[0] as string))];
        if (readyTypes.length > 0) await tx.execute(notifyReadyStatement(readyTypes));
      }),
    (e) => stepConstraintError(e, rows[0]?.jobId),
  );
}

/** The typed error for a violated step key or job reference (names from `CONSTRAINTS`). */
export function stepConstraintError(e: ConstraintViolationError, fallbackJobId: string | undefined) {
  if (e.constraint === CONSTRAINTS.stepJobFk) {
    const jobId = /\(job_id\)=\(([^)]+)\)/.exec(e.detail ?? "")?.[1];
    return new JobNotFoundError(jobId ?? fallbackJobId ?? "?", { cause: e });
  }
  if (e.constraint === CONSTRAINTS.stepPk) {
    const m = /\(job_id, step_name\)=\(([^,]+), (.*)\) already exists/.exec(e.detail ?? "");
    return new DuplicateStepError(m?.[1], m?.[2], { cause: e });
  }
  return undefined;
}
