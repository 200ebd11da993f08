import { type SQL, sql } from "drizzle-orm";

/**
 * One batch of the retention purge of jobs: up to `batchSize` finished jobs
 * (completed, failed or cancelled) with `completed_at` before `cutoff`,
 * oldest created first, whose steps are all terminal, locked
 * `FOR UPDATE SKIP LOCKED` (a job row someone holds is left for a later
 * batch, never waited for), then their steps and the jobs deleted, in one
 * statement, with their results (trigger `job_deleted`), artifacts (each
 * storage key recorded in `storage_deletion` for the server to delete) and
 * idempotency keys, and up to `batchSize` expired keys of any job. A
 * finished job that still has a live step (a running step of a cancelled
 * job whose worker has not reported yet) is kept until that step ends.
 * Returns one row: `jobs`, `steps`, `artifacts` (recorded for deletion), `keys` deleted.
 *
 * The walk is `idx_job_created_at` up to the cutoff (a job finished before
 * it was also created before it), each job's result by key. What the walk
 * steps past and filters out: jobs created before the cutoff that are still
 * unfinished, or finished after it (few, on a queue that keeps up).
 */
export function purgeJobsStatement(cutoff: Date, batchSize: number): SQL {
  return sql`
    with doomed as (
      select j.job_id from job j join job_result r on r.job_id = j.job_id
      where j.created_at < ${cutoff.toISOString()}::timestamptz
        and r.completed_at < ${cutoff.toISOString()}::timestamptz
        and not exists (select 1 from step_live s where s.job_id = j.job_id)
      order by j.created_at
      limit ${batchSize}::int
      for update of j skip locked
    ), steps as (
      delete from job_step s where s.job_id in (select job_id from doomed) returning 1
    ), artifacts as (
      delete from job_artifact a where a.job_id in (select job_id from doomed) returning a.job_id, a.name, a.storage_key
    ), recorded as (
      -- The objects to delete from storage: recorded with the rows' deletion, so none is orphaned.
      insert into storage_deletion (storage_key, source, job_id, name)
      select a.storage_key, 'artifact', a.job_id, a.name from artifacts a
      returning 1
    ), keys as (
      delete from job_idempotency_key k where k.job_id in (select job_id from doomed) returning 1
    ), expired as (
      delete from job_idempotency_key k
      where (k.workspace, k.key) in (
        select e.workspace, e.key from job_idempotency_key e
        where e.expires_at < now() limit ${batchSize}::int for update skip locked)
      returning 1
    ), jobs as (
      delete from job j where j.job_id in (select job_id from doomed) returning 1
    )
    select (select count(*) from jobs)::int as jobs, (select count(*) from steps)::int as steps,
           (select count(*) from recorded)::int as artifacts,
           ((select count(*) from keys) + (select count(*) from expired))::int as keys`;
}

/**
 * Lets the retention purge delete audit events in the current transaction:
 * the append-only trigger on `audit_event` allows a DELETE while
 * `stroem.audit_purge` is `on` (SET LOCAL: it ends with the transaction).
 */
export function allowAuditPurgeStatement(): SQL {
  return sql`set local stroem.audit_purge = 'on'`;
}

/**
 * One batch of the retention purge of audit events: up to `batchSize`
 * events with `occurred_at` before `cutoff`, oldest first
 * (`idx_audit_event_time`), locked SKIP LOCKED. Needs
 * `allowAuditPurgeStatement` first in the same transaction. Returns `events`.
 */
export function purgeAuditStatement(cutoff: Date, batchSize: number): SQL {
  return sql`
    with doomed as (
      select id from audit_event
      where occurred_at < ${cutoff.toISOString()}::timestamptz
      order by occurred_at, id
      limit ${batchSize}::int
      for update skip locked
    ), gone as (
      delete from audit_event where id in (select id from doomed) returning 1
    )
    select count(*)::int as events from gone`;
}
