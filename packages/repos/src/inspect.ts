import { type ActionType, WORKER_ACTION_TYPES, type WorkerStatus } from "@stroem/schema";
import { sql } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import { requireInt } from "./validate.js";

/**
 * Reads for "what is stuck?" (`stroem-db status`): running steps whose
 * worker is gone, the longest-running steps, and ready steps no worker can
 * take. Each is one statement over the partial indexes that hold only open
 * steps (`idx_step_live_running_worker` for running steps,
 * `idx_step_live_claim` for ready ones), so its cost follows the running set
 * or the ready backlog (`step_live`), never the finished history. Only
 * reads: they work on a read-only connection (a hot standby). Durations are
 * measured by the database's clock.
 */

/** Most rows one inspect call returns. */
export const MAX_INSPECT_ROWS = 1000;

/** A running step, with the worker that holds it. */
export interface RunningStep {
  jobId: string;
  stepName: string;
  actionType: ActionType;
  /** The attempt that runs (the step's `attempts`: its report's guard). */
  attempt: number;
  startedAt: Date;
  /** `now() - started_at`, ms (the database's clock). */
  runningForMs: number;
  /** Set when its job was cancelled and its worker has not stopped it yet. */
  cancelRequestedAt: Date | null;
  workerId: string;
  workerName: string;
  workerStatus: WorkerStatus;
  workerLastHeartbeat: Date | null;
}

/** `stuckSteps`' answer: the oldest `limit` of them, and how many there are in all. */
export interface StuckSteps {
  steps: RunningStep[];
  total: number;
}

/**
 * Why no worker takes a ready step: `ability`, no active worker has the
 * ability it needs; `tags`, some have the ability but none has every tag it
 * requires (or those that do are exclusive and reserved for other tags).
 */
export type UnmatchedReason = "ability" | "tags";

/** `unmatchedReady`'s rows: the ready steps of one route (ability and tags) no worker can take. */
export interface UnmatchedReady {
  /** The ability (a worker action type) the steps need: their `requiredAbility`, else their action type. */
  actionType: ActionType;
  /** The tags they require (sorted; `[]` for none). */
  requiredTags: string[];
  reason: UnmatchedReason;
  /** Ready steps of this route. */
  ready: number;
  /** Of those, due now (`ready_at <= now()`; the others wait for a retry's delay). */
  due: number;
  oldestReadyAt: Date;
  /** `now() - oldestReadyAt`, ms, 0 when it is not due yet. */
  oldestWaitMs: number;
}

/** A ready step no worker can take (`unmatchedReadySteps`). */
export interface UnmatchedReadyStep {
  jobId: string;
  stepName: string;
  actionType: ActionType;
  /** The ability it needs: its `requiredAbility`, else its action type. */
  requiredAbility: ActionType;
  requiredTags: string[];
  reason: UnmatchedReason;
  readyAt: Date;
  /** `now() - readyAt`, ms. */
  waitingMs: number;
}

type RunningRow = {
  job_id: string;
  step_name: string;
  action_type: ActionType;
  attempts: number;
  started_at: string | Date;
  running_for_ms: number | string;
  cancel_requested_at: string | Date | null;
  worker_id: string;
  worker_name: string;
  worker_status: WorkerStatus;
  last_heartbeat: string | Date | null;
};

const toDate = (v: string | Date): Date => (v instanceof Date ? v : new Date(v));
const toDateOrNull = (v: string | Date | null): Date | null => (v === null ? null : toDate(v));

function runningStep(r: RunningRow): RunningStep {
  return {
    jobId: r.job_id,
    stepName: r.step_name,
    actionType: r.action_type,
    attempt: Number(r.attempts),
    startedAt: toDate(r.started_at),
    runningForMs: Math.max(0, Number(r.running_for_ms)),
    cancelRequestedAt: toDateOrNull(r.cancel_requested_at),
    workerId: r.worker_id,
    workerName: r.worker_name,
    workerStatus: r.worker_status,
    workerLastHeartbeat: toDateOrNull(r.last_heartbeat),
  };
}

/** The columns of a running step and its worker (`s`: step_live, `w`: worker). */
const RUNNING_COLUMNS = sql`s.job_id, s.step_name, s.action_type, s.attempts, s.started_at, s.cancel_requested_at,
  (extract(epoch from now() - s.started_at) * 1000)::float8 as running_for_ms,
  s.worker_id, w.name as worker_name, w.status as worker_status, w.last_heartbeat`;

function limitOf(value: unknown): number {
  return value === undefined ? 20 : requireInt("limit", value, 1, MAX_INSPECT_ROWS);
}

/**
 * The running steps held by a worker that is stale (no heartbeat for
 * `staleAfterMs`, or none ever, by the database's clock) or `inactive`
 * (marked by maintenance or `WorkerRepo.deactivate`): work nobody is doing,
 * until the rescue gives it back (the rescue takes the stale ones; a step
 * of an inactive worker that still heartbeats waits for its worker). Oldest
 * `started_at` first, at most `limit` (1 to 1,000, default 20), with the
 * `total` count. One statement: the running steps through
 * `idx_step_live_running_worker` (the running set, not the history), their
 * workers by key. Throws `InvalidInputError` (a bad `staleAfterMs` or
 * `limit`) before any query.
 */
export async function stuckSteps(db: Executor, options: { staleAfterMs: number; limit?: number }): Promise<StuckSteps> {
  const staleAfterMs = requireInt("staleAfterMs", options?.staleAfterMs, 1, 2 ** 31 - 1);
  const limit = limitOf(options?.limit);
  const { rows } = await translateErrors(db, () =>
    db.execute<RunningRow & { total: number }>(sql`select ${RUNNING_COLUMNS}, (count(*) over ())::int as total
      from step_live s
      join worker w on w.worker_id = s.worker_id
      where s.status = 'running'
        and (w.status <> 'active' or w.last_heartbeat is null
          or w.last_heartbeat < now() - make_interval(secs => ${staleAfterMs / 1000}::float8))
      order by s.started_at, s.job_id, s.step_name
      limit ${limit}`),
  );
  return { steps: rows.map(runningStep), total: rows.length === 0 ? 0 : Number(rows[0]?.total) };
}

/**
 * The `limit` (1 to 1,000, default 20) running steps that have run longest,
 * oldest `started_at` first (ties by job id and step name), whatever their
 * worker's health. One statement over `idx_step_live_running_worker` (every
 * running step is in it: a running step always has a worker), each step's
 * worker by key, so it reads the running set, never the history. Throws
 * `InvalidInputError` (a bad `limit`) before any query.
 */
export async function oldestRunning(db: Executor, options: { limit?: number } = {}): Promise<RunningStep[]> {
  const limit = limitOf(options?.limit);
  const { rows } = await translateErrors(db, () =>
    db.execute<RunningRow>(sql`select ${RUNNING_COLUMNS}
      from step_live s
      join worker w on w.worker_id = s.worker_id
      where s.status = 'running'
      order by s.started_at, s.job_id, s.step_name
      limit ${limit}`),
  );
  return rows.map(runningStep);
}

/**
 * The routes a claim can serve (an untagged step's route is its ability; the
 * tagged ones are registered in `step_route`), each judged against the
 * active workers (with `staleAfterMs`, only those that heartbeated within
 * it: a silent worker claims nothing) by the claim's own rule (`routesOf`
 * in sql/claim.ts): `has_ability` and `matched`. Server steps' routes
 * (approval gates) are the server's: never listed. Reads every worker row
 * and every route (both small), not the steps.
 */
function judgedRoutes(staleAfterMs: number | undefined) {
  const live =
    staleAfterMs === undefined
      ? sql`true`
      : sql`w.last_heartbeat >= now() - make_interval(secs => ${staleAfterMs / 1000}::float8)`;
  return sql`routes as (
      select t.ability as route, t.ability, '{}'::text[] as tags, t.ord
      from unnest(${sql.param([...WORKER_ACTION_TYPES])}::text[]) with ordinality as t(ability, ord)
      union all
      select r.route, r.ability, r.tags, ${WORKER_ACTION_TYPES.length + 1} from step_route r
    ), judged as materialized (
      select ro.*,
        exists (select 1 from worker w where w.status = 'active' and ${live} and w.capabilities ? ro.ability) as has_ability,
        exists (select 1 from worker w where w.status = 'active' and ${live} and w.capabilities ? ro.ability
                  and ro.tags <@ w.tags and (not w.exclusive or w.tags <@ ro.tags)) as matched
      from routes ro
    )`;
}

function checkStale(options: { staleAfterMs?: number } | undefined) {
  return options?.staleAfterMs === undefined
    ? undefined
    : requireInt("staleAfterMs", options.staleAfterMs, 1, 2 ** 31 - 1);
}

/**
 * Ready steps no worker can take, per route: an ability (a worker action
 * type) and the tags steps require. One row per route with ready steps and
 * no `active` worker that may take them by the claim's rule (it has the
 * ability and every tag; an exclusive one only steps that require all of
 * its tags), with why (`reason`), how many are ready, how many are due, the
 * oldest `ready_at` and its wait; untagged routes in `WORKER_ACTION_TYPES`'
 * order, then tagged ones by route. With `staleAfterMs`, a worker that has
 * not heartbeated within it counts as absent. A route some live worker can
 * take is not read at all; for the others, the count is a range of
 * `idx_step_live_claim` (ready rows of that route only). Throws
 * `InvalidInputError` (a bad `staleAfterMs`) before any query.
 */
export async function unmatchedReady(db: Executor, options: { staleAfterMs?: number } = {}): Promise<UnmatchedReady[]> {
  const staleAfterMs = checkStale(options);
  const { rows } = await translateErrors(db, () =>
    db.execute<{
      ability: ActionType;
      tags: string[];
      has_ability: boolean;
      ready: number;
      due: number;
      oldest_ready_at: string | Date;
      oldest_wait_ms: number | string;
    }>(sql`with ${judgedRoutes(staleAfterMs)}
      select j.ability, j.tags, j.has_ability, r.ready, r.due, r.oldest_ready_at,
        greatest(0, extract(epoch from now() - r.oldest_ready_at) * 1000)::float8 as oldest_wait_ms
      from judged j
      cross join lateral (
        select count(*)::int as ready, (count(*) filter (where s.ready_at <= now()))::int as due,
          min(s.ready_at) as oldest_ready_at
        from step_live s
        where s.status = 'ready' and s.route = j.route) r
      where not j.matched and r.ready > 0
      order by j.ord, j.route`),
  );
  return rows.map((r) => ({
    actionType: r.ability,
    requiredTags: r.tags,
    reason: r.has_ability ? "tags" : "ability",
    ready: Number(r.ready),
    due: Number(r.due),
    oldestReadyAt: toDate(r.oldest_ready_at),
    oldestWaitMs: Number(r.oldest_wait_ms),
  }));
}

/**
 * The ready steps no worker can take, one by one (the operator's "why is my
 * step not running?"): those due for at least `olderThanMs` (default 0:
 * every due step) on a route no `active` worker may take (`unmatchedReady`'s
 * rule, `staleAfterMs` alike), oldest first, at most `limit` (default 100,
 * up to `MAX_INSPECT_ROWS`), each with why. Per unmatched route, a walk of
 * `idx_step_live_claim` from its oldest row, stopped at `limit`: the cost
 * follows the answer, not the backlog of routes workers take. Throws
 * `InvalidInputError` before any query.
 */
export async function unmatchedReadySteps(
  db: Executor,
  options: { olderThanMs?: number; staleAfterMs?: number; limit?: number } = {},
): Promise<UnmatchedReadyStep[]> {
  const olderThanMs = requireInt("olderThanMs", options?.olderThanMs ?? 0, 0, 2 ** 31 - 1);
  const limit = requireInt("limit", options?.limit ?? 100, 1, MAX_INSPECT_ROWS);
  const staleAfterMs = checkStale(options);
  const { rows } = await translateErrors(db, () =>
    db.execute<{
      job_id: string;
      step_name: string;
      action_type: ActionType;
      ability: ActionType;
      tags: string[];
      has_ability: boolean;
      ready_at: string | Date;
      waiting_ms: number | string;
    }>(sql`with ${judgedRoutes(staleAfterMs)}
      select s.job_id, s.step_name, d.action_type, j.ability, j.tags, j.has_ability, s.ready_at,
        greatest(0, extract(epoch from now() - s.ready_at) * 1000)::float8 as waiting_ms
      from judged j
      cross join lateral (
        select l.job_id, l.step_name, l.ready_at from step_live l
        where l.status = 'ready' and l.route = j.route
          and l.ready_at <= now() - make_interval(secs => ${olderThanMs / 1000}::float8)
        order by l.ready_at, l.job_id, l.step_name
        limit ${limit}) s
      join job_step d on d.job_id = s.job_id and d.step_name = s.step_name
      where not j.matched
      order by s.ready_at, s.job_id, s.step_name
      limit ${limit}`),
  );
  return rows.map((r) => ({
    jobId: r.job_id,
    stepName: r.step_name,
    actionType: r.action_type,
    requiredAbility: r.ability,
    requiredTags: r.tags,
    reason: r.has_ability ? "tags" : "ability",
    readyAt: toDate(r.ready_at),
    waitingMs: Number(r.waiting_ms),
  }));
}
