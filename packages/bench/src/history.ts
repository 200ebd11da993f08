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
 * Inserts the jobs (`job` and `job_result`), then their steps (`job_step`
 * and `step_result`), in chunks of `chunk` jobs (each its own statement).
 * 5% of the jobs failed (their last step with an error message), 2% were
 * cancelled, the rest completed (picked by a hash of the row number);
 * created times spread evenly over the days; a job starts 0 to 30 s after
 * creation and runs 1 to 600 s; each step waited 0 to 5 s after becoming
 * ready. Deterministic (from the row number). `onChunk` reports progress.
 */
export async function seedHistory(
  client: pg.ClientBase,
  shape: HistoryShape,
  onChunk: (done: number) => void = () => {},
  chunk = 100_000,
): Promise<void> {
  const spanSecs = shape.days * 86_400;
  // The jobs: each a definition (`job`) and its outcome (`job_result`).
  for (let first = 0; first < shape.jobs; first += chunk) {
    const last = Math.min(shape.jobs, first + chunk) - 1;
    await client.query(
      `with j as materialized (
         select
           i,
           md5('job' || i)::uuid as job_id,
           s.status,
           c.created,
           c.created + make_interval(secs => (i % 31)) as started,
           c.created + make_interval(secs => (i % 31) + 1 + (i::bigint * 7919) % 600) as completed
         from generate_series($3::int, $4::int) i
         cross join lateral (select $5::timestamptz - make_interval(secs => $6::float8 * (($7::int - 1 - i)::float8 / $7::int)) as created) c
         cross join lateral (select case when h.v < 5 then 'failed' when h.v < 7 then 'cancelled' else 'completed' end as status
           from (select abs(hashint4(i)) % 100 as v) h) s
       ), jobs as (
         insert into job (job_id, workspace, task_name, input, source_type, created_at)
         select
           j.job_id,
           'ws-' || (j.i % $1),
           'task-' || ((j.i / $1) % $2),
           jsonb_build_object('branch', 'branch-' || (j.i % 1000), 'commit', md5(j.i::text), 'run', j.i),
           (array['trigger', 'user', 'api', 'webhook'])[1 + (j.i / 7) % 4],
           j.created
         from j
       )
       insert into job_result (job_id, status, started_at, completed_at, steps_unfinished, steps_failed, error_message)
       select j.job_id, j.status, j.started, j.completed, 0, case when j.status = 'failed' then 1 else 0 end, null
       from j`,
      [shape.workspaces, shape.tasks, first, last, shape.end.toISOString(), spanSecs, shape.jobs],
    );
    onChunk(last + 1);
  }
  // The steps: each a definition (`job_step`) and its final state (`step_result`), from its job's outcome.
  for (let first = 0; first < shape.jobs; first += chunk) {
    const last = Math.min(shape.jobs, first + chunk) - 1;
    await client.query(
      `with s as materialized (
         select r.job_id, 's' || k as step_name,
           case when r.status = 'failed' and k = $1 - 1 then 'failed'
                when r.status = 'cancelled' and k = $1 - 1 then 'cancelled' else 'completed' end as status,
           r.started_at + make_interval(secs => k * 2) as ready_at,
           r.started_at + make_interval(secs => k * 2 + (k * 13 + i) % 6) as started_at,
           r.started_at + make_interval(secs => k * 2 + (k * 13 + i) % 6 + 1) as completed_at,
           case when r.status = 'failed' and k = $1 - 1
                then 'exit ' || (1 + (i / 10) % 5) || ': ' || (array['tests failed in module payments', 'out of memory (OOMKilled)', 'image pull backoff', 'timeout waiting for lock', 'segmentation fault'])[1 + (i / 10) % 5]
                else null end as error_message,
           case when k = 0 then '{}'::text[] else array['s' || (k - 1)] end as depends_on,
           case when k = $1 - 1 then '{}'::text[] else array['s' || (k + 1)] end as dependants
         from generate_series($2::int, $3::int) i
         join job_result r on r.job_id = md5('job' || i)::uuid
         cross join generate_series(0, $1 - 1) k
       ), definitions as (
         insert into job_step (job_id, step_name, action_name, action_type, depends_on, dependants)
         select s.job_id, s.step_name, 'run', 'shell', s.depends_on, s.dependants from s
       )
       insert into step_result (job_id, step_name, action_type, status, ready_at, started_at, completed_at,
         error_message, deps_total, dependants, propagated, job_started_at)
       select s.job_id, s.step_name, 'shell', s.status, s.ready_at, s.started_at, s.completed_at, s.error_message,
         cardinality(s.depends_on), s.dependants, true, s.started_at
       from s`,
      [shape.stepsPerJob, first, last],
    );
    onChunk(shape.jobs + last + 1);
  }
}
