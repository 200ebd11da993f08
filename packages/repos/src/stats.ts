import { JOB_STATUSES, type JobStatus } from "@stroem/schema";
import { type Executor, translateErrors } from "./db.js";
import { InvalidInputError, InvalidRangeError } from "./errors.js";
import { type StatsRow, statsStatement } from "./sql/stats.js";
import { optionalDate, requireText } from "./validate.js";

/** What `JobRepo.stats` summarises: the jobs created in `[from, to)`, of one workspace and task if given. */
export interface JobStatsQuery {
  workspace?: string;
  taskName?: string;
  from: Date;
  to: Date;
  /** Throughput bucket: seconds, or `"30s"`, `"15m"`, `"1h"`, `"1d"`. */
  bucket: number | string;
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
  if (typeof query !== "object" || query === null) throw new InvalidInputError("query", "must be an object");
  const from = optionalDate("from", query.from);
  const to = optionalDate("to", query.to);
  if (!from) throw new InvalidInputError("from", "is required");
  if (!to) throw new InvalidInputError("to", "is required");
  if (from >= to) throw new InvalidRangeError("from", "must be before to");
  if (to.getTime() - from.getTime() > MAX_STATS_DAYS * 86_400_000) {
    throw new InvalidRangeError("to", `the window must be at most ${MAX_STATS_DAYS} days`);
  }
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
