import { type SQL, sql } from "drizzle-orm";

/** The checked input of `JobRepo.stats`. */
export interface StatsFilters {
  workspace?: string;
  taskName?: string;
  from: Date;
  to: Date;
  bucketSecs: number;
  /** Only these (workspace, task) pairs (`taskName` null: the whole workspace), normalised; absent: no restriction. */
  scope?: ReadonlyArray<{ workspace: string; taskName: string | null }>;
}

/** One row: every figure as JSON, from one snapshot. */
export interface StatsRow {
  statuses: Record<string, number>;
  durations: { count: number; p: number[] | null };
  waits: { count: number; p: number[] | null };
  tasks: Array<{ task_name: string; completed: number; failed: number; cancelled: number; total: number }>;
  buckets: Array<{ start: string; created: number; finished: number; failed: number }>;
}

/**
 * `stats`' statement: query-time aggregation over the jobs created in
 * `[from, to)` (of one workspace, one task). The window is one range scan
 * of `idx_job_workspace_task` (workspace and task), `idx_job_workspace_created`
 * (workspace) or `idx_job_created_at`, materialised once; the queue waits
 * read each of those jobs' steps through the primary key `(job_id,
 * step_name)` (a LATERAL sub-query, fenced with OFFSET 0 so it stays a
 * nested loop): the cost follows the jobs in the window. Left to choose, the
 * planner took a hash join over a sequential scan of every step for a day of
 * one workspace (3,300 jobs among 5,000,000 steps: 1.1 s against 0.1 s), and
 * ids passed as one array (`= any(array(…))`) made it search the array for
 * each of 5,000,000 steps on a 30-day window (minutes).
 * Chosen over a rollup written when a job finishes by measuring (`pnpm bench
 * --stats`, figures in the repos README): a day of one workspace among
 * 1,000,000 jobs and 5,000,000 steps answers in 51 ms, while a rollup
 * trigger took 6% off 8 workers' finish throughput (a write on a row shared
 * by a workspace's task for an hour, in every finish) and still could not
 * give exact percentiles. Buckets start at `from` (`date_bin` with `from` as origin).
 */
export function statsStatement(f: StatsFilters): SQL {
  const from = sql`${f.from.toISOString()}::timestamptz`;
  const to = sql`${f.to.toISOString()}::timestamptz`;
  const bucket = sql`make_interval(secs => ${f.bucketSecs})`;
  const where: SQL[] = [sql`j.created_at >= ${from}`, sql`j.created_at < ${to}`];
  if (f.workspace !== undefined) where.push(sql`j.workspace = ${f.workspace}`);
  if (f.taskName !== undefined) where.push(sql`j.task_name = ${f.taskName}`);
  const cols = sql`j.job_id, j.task_name, j.status, j.created_at, j.started_at, j.completed_at`;
  const filter = sql.join(where, sql` and `);
  // Scoped: one range scan per allowed pair (as unscoped, per index shape), their union the window.
  const window =
    f.scope === undefined
      ? sql`select ${cols} from job_state j where ${filter}`
      : sql`select ${cols}
        from jsonb_to_recordset(${JSON.stringify(f.scope.filter((p) => p.taskName !== null))}::jsonb)
          as p(workspace text, "taskName" text)
        cross join lateral (select * from job_state j
          where j.workspace = p.workspace and j.task_name = p."taskName" and ${filter}) j
        union all
        select ${cols}
        from jsonb_array_elements_text(${JSON.stringify(f.scope.filter((p) => p.taskName === null).map((p) => p.workspace))}::jsonb)
          as s(workspace)
        cross join lateral (select * from job_state j where j.workspace = s.workspace and ${filter}) j`;
  return sql`with w as materialized (${window}),
    b as (select generate_series(${from}, ${to} - interval '1 microsecond', ${bucket}) as start)
    select
      (select coalesce(json_object_agg(status, n), '{}'::json)
         from (select status, count(*) as n from w group by status) s) as statuses,
      (select json_build_object('count', count(*), 'p',
          percentile_cont(array[0.5, 0.95, 0.99]) within group (order by extract(epoch from completed_at - started_at)::float8 * 1000))
         from w where status in ('completed', 'failed') and started_at is not null) as durations,
      (select json_build_object('count', count(*), 'p',
          percentile_cont(array[0.5, 0.95]) within group (order by extract(epoch from s.started_at - s.ready_at)::float8 * 1000))
         from w cross join lateral (
           select s.started_at, s.ready_at from job_step_state s
           where s.job_id = w.job_id and s.started_at >= s.ready_at and s.status not in ('pending', 'ready')
           offset 0) s) as waits,
      (select coalesce(json_agg(t order by t.task_name), '[]'::json) from (
         select task_name,
           count(*) filter (where status = 'completed') as completed,
           count(*) filter (where status = 'failed') as failed,
           count(*) filter (where status = 'cancelled') as cancelled,
           count(*) as total
         from w group by task_name) t) as tasks,
      (select json_agg(json_build_object(
           'start', to_char(b.start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'created', coalesce(c.n, 0), 'finished', coalesce(d.n, 0), 'failed', coalesce(d.failed, 0))
           order by b.start)
         from b
         left join (select date_bin(${bucket}, created_at, ${from}) as k, count(*) as n from w group by 1) c on c.k = b.start
         left join (select date_bin(${bucket}, completed_at, ${from}) as k, count(*) as n,
                      count(*) filter (where status = 'failed') as failed
                    from w where completed_at < ${to} group by 1) d on d.k = b.start) as buckets`;
}

/** The checked input of `JobRepo.durations`. */
export interface DurationFilters {
  workspace: string;
  taskName: string;
  from: Date;
  to: Date;
  recent: number;
}

/**
 * `durations`' statement, one snapshot: over the task's jobs created in
 * `[from, to)` (one range of `idx_job_workspace_task`), the job durations'
 * count, p50, p95, min and max (`started_at -> completed_at` of completed and
 * failed jobs), the same per step name (each step's last run, read through
 * the primary key per job as `statsStatement` does), and the task's `recent`
 * newest finished jobs, whatever the window (the same index walked
 * backwards, stopping after `recent`).
 */
export function durationsStatement(f: DurationFilters): SQL {
  const from = sql`${f.from.toISOString()}::timestamptz`;
  const to = sql`${f.to.toISOString()}::timestamptz`;
  const summary = (d: SQL) =>
    sql`'count', count(*), 'p', percentile_cont(array[0.5, 0.95]) within group (order by ${d}), 'min', min(${d}), 'max', max(${d})`;
  const jobMs = sql`extract(epoch from w.completed_at - w.started_at)::float8 * 1000`;
  const stepMs = sql`extract(epoch from s.completed_at - s.started_at)::float8 * 1000`;
  return sql`with w as materialized (
      select j.job_id, j.status, j.started_at, j.completed_at from job_state j
      where j.workspace = ${f.workspace} and j.task_name = ${f.taskName}
        and j.created_at >= ${from} and j.created_at < ${to}
    )
    select
      (select json_build_object(${summary(jobMs)}) from w
         where w.status in ('completed', 'failed') and w.started_at is not null) as jobs,
      (select coalesce(json_agg(x order by x.step_name), '[]'::json) from (
         select s.step_name, json_build_object(${summary(stepMs)}) as d
         from w cross join lateral (
           select s.step_name, s.started_at, s.completed_at from job_step_state s
           where s.job_id = w.job_id and s.status in ('completed', 'failed') and s.started_at is not null
           offset 0) s
         group by s.step_name) x) as steps,
      (select coalesce(json_agg(r order by r.created_at desc), '[]'::json) from (
         select j.job_id, j.status, j.created_at, j.completed_at,
                extract(epoch from j.completed_at - j.started_at)::float8 * 1000 as ms
         from job_state j
         where j.workspace = ${f.workspace} and j.task_name = ${f.taskName}
           and j.status in ('completed', 'failed') and j.started_at is not null
         order by j.created_at desc
         limit ${f.recent}::int) r) as recent`;
}
