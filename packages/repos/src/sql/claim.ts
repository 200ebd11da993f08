import { type SQL, sql } from "drizzle-orm";

/**
 * Starts the jobs of the steps in the CTE `claimed` (a job is `running` from
 * its first started step). SKIP LOCKED: a job row locked by another claimer
 * (who starts it) or by a report (which settles it, and sets it running if
 * it must) never makes a claim wait.
 */
const startJobs = sql`
    started_jobs as (
      update job
      set status = 'running', started_at = coalesce(job.started_at, now())
      where job.job_id in (
        select j.job_id from job j
        where j.job_id in (select job_id from claimed) and j.status = 'pending'
        for no key update skip locked
      )
    )`;

/**
 * The claim: up to `limit` of the oldest ready steps whose action type is one
 * of `capabilities`, moved to `running` for `workerId` (`started_at`,
 * `attempts + 1`), returning the claimed rows oldest first.
 *
 * Per action type, a LATERAL sub-select walks `idx_job_step_claim`
 * (`action_type, ready_at, job_id, step_name WHERE status = 'ready'`) from
 * its oldest row, locking with SKIP LOCKED, so a `shell` claim never walks
 * past ready `docker` steps, and `ready_at <= now()` stops the walk at steps
 * that are not due yet. The outer ORDER BY / LIMIT keeps the oldest `limit`
 * of those (with several capabilities, up to `limit` rows per capability are
 * locked for the statement's few milliseconds and the surplus is left ready).
 * The CTE fences the locked sub-select: Postgres runs it once, so the UPDATE
 * touches exactly the rows it locked (Oban's lesson).
 */
export function claimStatement(capabilities: readonly string[], workerId: string, limit: number): SQL {
  // One capability (the usual worker): the index walk alone, no outer sort.
  const next =
    capabilities.length === 1
      ? sql`
      select s.job_id, s.step_name
      from job_step s
      where s.status = 'ready' and s.action_type = ${capabilities[0]} and s.ready_at <= now()
      order by s.ready_at, s.job_id, s.step_name
      limit ${limit}
      for update skip locked`
      : sql`
      select c.job_id, c.step_name
      from unnest(${sql.param(capabilities)}::text[]) as cap(action_type)
      cross join lateral (
        select s.job_id, s.step_name, s.ready_at
        from job_step s
        where s.status = 'ready' and s.action_type = cap.action_type and s.ready_at <= now()
        order by s.ready_at, s.job_id, s.step_name
        limit ${limit}
        for update skip locked
      ) c
      order by c.ready_at, c.job_id, c.step_name
      limit ${limit}`;
  return sql`
    with next as (${next}
    ), claimed as (
      update job_step s
      set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = s.attempts + 1
      from next
      where s.job_id = next.job_id and s.step_name = next.step_name
      returning s.*
    ), ${startJobs}
    select * from claimed order by ready_at, job_id, step_name`;
}

/**
 * A directed claim (`markRunning`): one named ready step moved to `running`
 * for `workerId`, starting its job like the claim. Returns one row when it
 * moved, none when the step was not ready (or does not exist).
 */
export function directedClaimStatement(jobId: string, stepName: string, workerId: string): SQL {
  return sql`
    with claimed as (
      update job_step s
      set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = s.attempts + 1
      where s.job_id = ${jobId} and s.step_name = ${stepName} and s.status = 'ready'
      returning s.job_id
    ), ${startJobs}
    select job_id from claimed`;
}
