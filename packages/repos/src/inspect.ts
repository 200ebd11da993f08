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

/** `unmatchedReady`'s rows: the ready steps of one action type no worker can take. */
export interface UnmatchedReady {
  actionType: ActionType;
  /** Ready steps of this action type. */
  ready: number;
  /** Of those, due now (`ready_at <= now()`; the others wait for a retry's delay). */
  due: number;
  oldestReadyAt: Date;
  /** `now() - oldestReadyAt`, ms, 0 when it is not due yet. */
  oldestWaitMs: number;
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
 * Ready steps no worker can take, per action type: those of the action
 * types that no `active` worker lists in its capabilities (with
 * `staleAfterMs`, no active worker that heartbeated within it either: a
 * silent worker claims nothing). One row per such action type with ready
 * steps, in `WORKER_ACTION_TYPES`' order (server steps, approval gates, are
 * the server's: never unmatched): how many are ready, how many are due, the
 * oldest `ready_at` and its wait. An action type some live worker can take
 * is not read at all; for the others, the count is a range of
 * `idx_step_live_claim` (ready rows only). Reads every worker row (the
 * `worker` table, not the steps). Throws `InvalidInputError` (a bad
 * `staleAfterMs`) before any query.
 */
export async function unmatchedReady(db: Executor, options: { staleAfterMs?: number } = {}): Promise<UnmatchedReady[]> {
  const staleAfterMs =
    options?.staleAfterMs === undefined ? undefined : requireInt("staleAfterMs", options.staleAfterMs, 1, 2 ** 31 - 1);
  const live =
    staleAfterMs === undefined
      ? sql`true`
      : sql`w.last_heartbeat >= now() - make_interval(secs => ${staleAfterMs / 1000}::float8)`;
  const { rows } = await translateErrors(db, () =>
    db.execute<{
      action_type: ActionType;
      ready: number;
      due: number;
      oldest_ready_at: string | Date;
      oldest_wait_ms: number | string;
    }>(sql`select t.action_type, r.ready, r.due, r.oldest_ready_at,
        greatest(0, extract(epoch from now() - r.oldest_ready_at) * 1000)::float8 as oldest_wait_ms
      from unnest(${sql.param([...WORKER_ACTION_TYPES])}::text[]) with ordinality as t(action_type, ord)
      cross join lateral (
        select count(*)::int as ready, (count(*) filter (where s.ready_at <= now()))::int as due,
          min(s.ready_at) as oldest_ready_at
        from step_live s
        where s.status = 'ready' and s.action_type = t.action_type) r
      where not exists (
          select 1 from worker w
          where w.status = 'active' and w.capabilities ? t.action_type and ${live})
        and r.ready > 0
      order by t.ord`),
  );
  return rows.map((r) => ({
    actionType: r.action_type,
    ready: Number(r.ready),
    due: Number(r.due),
    oldestReadyAt: toDate(r.oldest_ready_at),
    oldestWaitMs: Number(r.oldest_wait_ms),
  }));
}
