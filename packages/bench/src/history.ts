/**
 * A finished history generated set-based (`INSERT … SELECT generate_series`,
 * not through the repos): for `pnpm bench --stats`, which measures
 * `JobRepo.stats` and `JobRepo.search` at a million jobs.
 */
import type pg from "pg";

export interface HistoryShape {
  /** Finished jobs. */
  jobs: number;
  /** Steps per job (a chain s0 → s1 → …). */
  stepsPerJob: number;
  /** Workspaces `ws-0` … (jobs spread evenly). */
  workspaces: number;
  /** Task names `task-0` … per workspace. */
  tasks: number;
  /** Days of history, ending at `end`. */
  days: number;
  end: Date;
}

/**
 * Inserts the jobs, then their steps, in chunks of `chunk` jobs (each its own
 * statement). 5% of the jobs failed (their last step with an error message),
 * 2% were cancelled, the rest completed (picked by a hash of the row number); created times spread evenly over
 * the days; a job starts 0 to 30 s after creation and runs 1 to 600 s; each
 * step waited 0 to 5 s after becoming ready. Deterministic (from the row
 * number). `onChunk` reports progress.
 */
export async function seedHistory(
  client: pg.ClientBase,
  shape: HistoryShape,
  onChunk: (done: number) => void = () => {},
  chunk = 100_000,
): Promise<void> {
  const spanSecs = shape.days * 86_400;
  for (let first = 0; first < shape.jobs; first += chunk) {
    const last = Math.min(shape.jobs, first + chunk) - 1;
    await client.query(
      `insert into job (job_id, workspace, task_name, input, status, source_type, created_at, started_at,
         completed_at, steps_unfinished, steps_failed, error_message)
       select
         md5('job' || i)::uuid,
         'ws-' || (i % $1),
         'task-' || ((i / $1) % $2),
         jsonb_build_object('branch', 'branch-' || (i % 1000), 'commit', md5(i::text), 'run', i),
         s.status,
         (array['trigger', 'user', 'api', 'webhook'])[1 + (i / 7) % 4],
         c.created,
         c.created + make_interval(secs => (i % 31)),
         c.created + make_interval(secs => (i % 31) + 1 + (i::bigint * 7919) % 600),
         0,
         case when s.status = 'failed' then 1 else 0 end,
         null
       from generate_series($3::int, $4::int) i
       cross join lateral (select $5::timestamptz - make_interval(secs => $6::float8 * (($7::int - 1 - i)::float8 / $7::int)) as created) c
       cross join lateral (select case when h.v < 5 then 'failed' when h.v < 7 then 'cancelled' else 'completed' end as status
         from (select abs(hashint4(i)) % 100 as v) h) s`,
      [shape.workspaces, shape.tasks, first, last, shape.end.toISOString(), spanSecs, shape.jobs],
    );
    onChunk(last + 1);
  }
  for (let first = 0; first < shape.jobs; first += chunk) {
    const last = Math.min(shape.jobs, first + chunk) - 1;
    await client.query(
      `insert into job_step (job_id, step_name, action_name, action_type, status, ready_at, started_at,
         completed_at, error_message, depends_on, dependants, propagated)
       select j.job_id, 's' || k, 'run', 'shell',
         case when j.status = 'failed' and k = $1 - 1 then 'failed'
              when j.status = 'cancelled' and k = $1 - 1 then 'cancelled' else 'completed' end,
         j.started_at + make_interval(secs => k * 2),
         j.started_at + make_interval(secs => k * 2 + (k * 13 + i) % 6),
         j.started_at + make_interval(secs => k * 2 + (k * 13 + i) % 6 + 1),
         case when j.status = 'failed' and k = $1 - 1
              then 'exit ' || (1 + (i / 10) % 5) || ': ' || (array['tests failed in module payments', 'out of memory (OOMKilled)', 'image pull backoff', 'timeout waiting for lock', 'segmentation fault'])[1 + (i / 10) % 5]
              else null end,
         case when k = 0 then '{}'::text[] else array['s' || (k - 1)] end,
         case when k = $1 - 1 then '{}'::text[] else array['s' || (k + 1)] end,
         true
       from generate_series($2::int, $3::int) i
       join job j on j.job_id = md5('job' || i)::uuid
       cross join generate_series(0, $1 - 1) k`,
      [shape.stepsPerJob, first, last],
    );
    onChunk(shape.jobs + last + 1);
  }
}
