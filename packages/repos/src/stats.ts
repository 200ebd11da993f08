import { JOB_STATUSES, type JobStatus } from "@stroem/schema";
import { type Executor, translateErrors } from "./db.js";
import { InvalidInputError, InvalidRangeError } from "./errors.js";
import { checkScope, type JobScope } from "./search.js";
import { durationsStatement, type StatsRow, statsStatement } from "./sql/stats.js";
import { optionalDate, requireInt, requireText } from "./validate.js";

/** What `JobRepo.stats` summarises: the jobs created in `[from, to)`, of one workspace and task if given. */
export interface JobStatsQuery {
  workspace?: string;
  taskName?: string;
  from: Date;
  to: Date;
  /** Throughput bucket: seconds, or `"30s"`, `"15m"`, `"1h"`, `"1d"`. */
  bucket: number | string;
  /** Only these (workspace, task) pairs, as `search`'s `scope`; an empty scope sees nothing (all counts 0). */
  scope?: JobScope;
}

/** Percentiles in milliseconds (null when nothing was measured). */
export interface Percentiles {
  /** How many values they are taken over. */
  count: number;
  p50: number | null;
  p95: number | null;
}

/** Failures of one task: `failureRate` = failed / (completed + failed); cancelled jobs count neither way. */
export interface TaskStats {
  taskName: string;
  total: number;
  completed: number;
  failed: number;
  cancelled: number;
  /** null while none of its jobs completed or failed. */
  failureRate: number | null;
}

/** One throughput bucket `[start, start + bucket)`. */
export interface ThroughputBucket {
  start: Date;
  /** Jobs of the window created in the bucket. */
  created: number;
  /** Jobs of the window that finished (completed, failed, cancelled) in the bucket. */
  finished: number;
  /** Of those, failed. */
  failed: number;
}

/** `JobRepo.stats`' answer. */
export interface JobStats {
  from: Date;
  to: Date;
  bucketSecs: number;
  /** Jobs created in the window, per status (every status present). */
  jobs: Record<JobStatus, number>;
  total: number;
  /** `started_at -> completed_at` of the window's completed and failed jobs. */
  durationMs: Percentiles & { p99: number | null };
  /** `ready_at -> started_at` of the window's steps that ran (each step's last run). */
  queueWaitMs: Percentiles;
  /** Per task name, by name. */
  tasks: TaskStats[];
  /** One entry per bucket from `from`, oldest first. */
  throughput: ThroughputBucket[];
}

/** Longest window `stats` takes, in days. */
export const MAX_STATS_DAYS = 366;
/** Most throughput buckets one call returns. */
export const MAX_STATS_BUCKETS = 1000;

const UNIT_SECS = { s: 1, m: 60, h: 3600, d: 86_400 } as const;

/** A bucket as seconds: a positive integer, or `<n>s|m|h|d`. Throws `InvalidInputError` (field `bucket`). */
export function parseBucket(bucket: unknown): number {
  let secs: number | undefined;
  if (typeof bucket === "number") secs = bucket;
  else if (typeof bucket === "string") {
    const m = /^(\d{1,7})\s*(s|m|h|d)$/.exec(bucket.trim());
    if (m) secs = Number(m[1]) * UNIT_SECS[m[2] as keyof typeof UNIT_SECS];
  }
  if (secs === undefined || !Number.isInteger(secs) || secs < 1 || secs > MAX_STATS_DAYS * 86_400) {
    throw new InvalidInputError(
      "bucket",
      `must be a whole number of seconds (1 or more) or a duration such as "30s", "15m", "1h", "1d", got ${JSON.stringify(bucket)}`,
    );
  }
  return secs;
}

/** A query's `[from, to)` window, checked: both given, `from` before `to`, at most 366 days. */
function checkWindow(query: unknown): { from: Date; to: Date } {
  if (typeof query !== "object" || query === null) throw new InvalidInputError("query", "must be an object");
  const q = query as { from?: unknown; to?: unknown };
  const from = optionalDate("from", q.from);
  const to = optionalDate("to", q.to);
  if (!from) throw new InvalidInputError("from", "is required");
  if (!to) throw new InvalidInputError("to", "is required");
  if (from >= to) throw new InvalidRangeError("from", "must be before to");
  if (to.getTime() - from.getTime() > MAX_STATS_DAYS * 86_400_000) {
    throw new InvalidRangeError("to", `the window must be at most ${MAX_STATS_DAYS} days`);
  }
  return { from, to };
}

const ms = (v: number | null | undefined) => (v === null || v === undefined ? null : Math.round(v * 1000) / 1000);

/**
 * Job metrics over the jobs created in `[from, to)` (one workspace, one task
 * name, if given), in one read-only statement (one snapshot): counts per
 * status, job duration p50 / p95 / p99 (`started_at -> completed_at`, jobs
 * that completed or failed), step queue wait p50 / p95 (`ready_at ->
 * started_at`, each step's last run), failures per task, and per bucket the
 * jobs created and finished. Aggregated at query time over an index range
 * (see `statsStatement`; measured in `pnpm bench --stats`). Works on a
 * read-only connection (a hot standby). Throws, before any query:
 * `InvalidInputError` (a bad field or bucket), `InvalidRangeError` (`from`
 * not before `to`, more than 366 days, more than 1,000 buckets).
 */
export async function stats(db: Executor, query: JobStatsQuery): Promise<JobStats> {
  const { from, to } = checkWindow(query);
  const bucketSecs = parseBucket(query.bucket);
  const buckets = Math.ceil((to.getTime() - from.getTime()) / (bucketSecs * 1000));
  if (buckets > MAX_STATS_BUCKETS) {
    throw new InvalidRangeError(
      "bucket",
      `gives ${buckets} buckets over the window; at most ${MAX_STATS_BUCKETS} (take a longer bucket)`,
    );
  }
  const filters = {
    from,
    to,
    bucketSecs,
    ...(query.workspace === undefined ? {} : { workspace: requireText("workspace", query.workspace) }),
    ...(query.taskName === undefined ? {} : { taskName: requireText("taskName", query.taskName) }),
  };
  const scope = checkScope(query.scope, query.workspace);
  // An empty scope sees nothing: the same statement over a window no job is in.
  if (scope !== undefined) Object.assign(filters, { scope });
  const result = await translateErrors(db, () => db.execute<Record<string, unknown>>(statsStatement(filters)));
  const row = result.rows[0] as unknown as StatsRow;
  const jobs = Object.fromEntries(JOB_STATUSES.map((s) => [s, Number(row.statuses[s] ?? 0)])) as Record<
    JobStatus,
    number
  >;
  const d = row.durations.p ?? [];
  const w = row.waits.p ?? [];
  return {
    from,
    to,
    bucketSecs,
    jobs,
    total: Object.values(jobs).reduce((a, b) => a + b, 0),
    durationMs: { count: Number(row.durations.count), p50: ms(d[0]), p95: ms(d[1]), p99: ms(d[2]) },
    queueWaitMs: { count: Number(row.waits.count), p50: ms(w[0]), p95: ms(w[1]) },
    tasks: row.tasks.map((t) => ({
      taskName: t.task_name,
      total: Number(t.total),
      completed: Number(t.completed),
      failed: Number(t.failed),
      cancelled: Number(t.cancelled),
      failureRate:
        Number(t.completed) + Number(t.failed) === 0
          ? null
          : Number(t.failed) / (Number(t.completed) + Number(t.failed)),
    })),
    throughput: (row.buckets ?? []).map((b) => ({
      start: new Date(b.start),
      created: Number(b.created),
      finished: Number(b.finished),
      failed: Number(b.failed),
    })),
  };
}

/** Durations in milliseconds: how many, p50, p95, min, max (null when there were none). */
export interface DurationSummary extends Percentiles {
  min: number | null;
  max: number | null;
}

/** What `JobRepo.durations` takes: one task of one workspace, the jobs created in `[from, to)`. */
export interface DurationQuery {
  workspace: string;
  taskName: string;
  from: Date;
  to: Date;
  /** How many of the task's newest finished jobs to list (0 to 100; default 10), whatever the window. */
  recent?: number;
}

/** `JobRepo.durations`' answer. */
export interface TaskDurations {
  /** `started_at -> completed_at` of the window's completed and failed jobs. */
  jobs: DurationSummary;
  /** The same per step name (each step's last run), by name. */
  steps: Array<{ stepName: string } & DurationSummary>;
  /** The task's newest finished jobs, newest first: what a UI estimates the next run's length from. */
  recent: Array<{
    jobId: string;
    status: "completed" | "failed";
    createdAt: Date;
    completedAt: Date;
    durationMs: number;
  }>;
}

/** Most `recent` jobs `durations` lists. */
export const MAX_RECENT = 100;

const summaryOf = (d: { count: number; p: number[] | null; min: number | null; max: number | null }) => ({
  count: Number(d.count),
  p50: ms(d.p?.[0]),
  p95: ms(d.p?.[1]),
  min: ms(d.min),
  max: ms(d.max),
});

/**
 * How long a task's jobs and steps take: over the task's jobs created in
 * `[from, to)`, count, p50, p95, min and max of the job durations and of each
 * step's, and the task's newest finished jobs with their durations, in one
 * read-only statement (`durationsStatement`: index ranges, no scan of the
 * history). Throws, before any query: `InvalidInputError`,
 * `InvalidRangeError` (`from` not before `to`, more than 366 days).
 */
export async function durations(db: Executor, query: DurationQuery): Promise<TaskDurations> {
  const { from, to } = checkWindow(query);
  const filters = {
    workspace: requireText("workspace", query.workspace),
    taskName: requireText("taskName", query.taskName),
    from,
    to,
    recent: requireInt("recent", query.recent ?? 10, 0, MAX_RECENT),
  };
  const result = await translateErrors(db, () => db.execute<Record<string, unknown>>(durationsStatement(filters)));
  const row = result.rows[0] as unknown as {
    jobs: { count: number; p: number[] | null; min: number | null; max: number | null };
    steps: Array<{
      step_name: string;
      d: { count: number; p: number[] | null; min: number | null; max: number | null };
    }>;
    recent: Array<{
      job_id: string;
      status: "completed" | "failed";
      created_at: string;
      completed_at: string;
      ms: number;
    }>;
  };
  return {
    jobs: summaryOf(row.jobs),
    steps: row.steps.map((s) => ({ stepName: s.step_name, ...summaryOf(s.d) })),
    recent: row.recent.map((r) => ({
      jobId: r.job_id,
      status: r.status,
      createdAt: new Date(r.created_at),
      completedAt: new Date(r.completed_at),
      durationMs: ms(r.ms) as number,
    })),
  };
}
