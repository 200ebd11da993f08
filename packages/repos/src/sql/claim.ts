import { type SQL, type SQLChunk, sql } from "drizzle-orm";
import { type Statement, statement } from "../statement.js";

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
function claimQuery(multiple: boolean, p: { actionTypes: SQLChunk; workerId: SQLChunk; limit: SQLChunk }): SQL {
  // One capability (the usual worker): the index walk alone, no outer sort.
  const next = multiple
    ? sql`
      select c.job_id, c.step_name
      from unnest(${p.actionTypes}::text[]) as cap(action_type)
      cross join lateral (
        select s.job_id, s.step_name, s.ready_at
        from job_step s
        where s.status = 'ready' and s.action_type = cap.action_type and s.ready_at <= now()
        order by s.ready_at, s.job_id, s.step_name
        limit ${p.limit}
        for update skip locked
      ) c
      order by c.ready_at, c.job_id, c.step_name
      limit ${p.limit}`
    : sql`
      select s.job_id, s.step_name
      from job_step s
      where s.status = 'ready' and s.action_type = ${p.actionTypes} and s.ready_at <= now()
      order by s.ready_at, s.job_id, s.step_name
      limit ${p.limit}
      for update skip locked`;
  return sql`
    with next as (${next}
    ), claimed as (
      update job_step s
      set status = 'running', worker_id = ${p.workerId}::uuid, started_at = now(), attempts = s.attempts + 1
      from next
      where s.job_id = next.job_id and s.step_name = next.step_name
      returning s.*
    ), ${startJobs}
    select * from claimed order by ready_at, job_id, step_name`;
}

type ClaimValues = { actionTypes: string | string[]; workerId: string; limit?: number };
const placeholders = {
  actionTypes: sql.placeholder("actionTypes"),
  workerId: sql.placeholder("workerId"),
  limit: sql.placeholder("limit"),
};
// A single claim (the default worker loop) has its own statements with a
// literal `limit 1`: with `limit $n` Postgres judges the generic plan worse
// than a custom one (it cannot know n is small) and re-plans the four-part
// statement on every execution, about a sixth of the server's CPU per step
// (measured with pg_prepared_statements.custom_plans and perf). With the
// literal it switches to the cached generic plan after five executions.
const one = { ...placeholders, limit: sql`1` };
const CLAIM_ONE_TYPE = statement<ClaimValues>("claim_one_type", claimQuery(false, placeholders));
const CLAIM_TYPES = statement<ClaimValues>("claim_types", claimQuery(true, placeholders));
const CLAIM_ONE_TYPE_SINGLE = statement<ClaimValues>("claim_one_type_single", claimQuery(false, one));
const CLAIM_TYPES_SINGLE = statement<ClaimValues>("claim_types_single", claimQuery(true, one));

/** The prepared claim for these capabilities, and its values. */
export function claim(
  capabilities: readonly string[],
  workerId: string,
  limit: number,
): { statement: Statement<ClaimValues>; values: ClaimValues } {
  if (limit === 1) {
    return capabilities.length === 1
      ? { statement: CLAIM_ONE_TYPE_SINGLE, values: { actionTypes: capabilities[0] as string, workerId } }
      : { statement: CLAIM_TYPES_SINGLE, values: { actionTypes: [...capabilities], workerId } };
  }
  return capabilities.length === 1
    ? { statement: CLAIM_ONE_TYPE, values: { actionTypes: capabilities[0] as string, workerId, limit } }
    : { statement: CLAIM_TYPES, values: { actionTypes: [...capabilities], workerId, limit } };
}

/** The claim as a Drizzle `sql` with its values bound (for EXPLAIN in tests). */
export function claimStatement(capabilities: readonly string[], workerId: string, limit: number): SQL {
  const multiple = capabilities.length > 1;
  return claimQuery(multiple, {
    actionTypes: multiple ? sql.param(capabilities) : sql`${capabilities[0]}`,
    workerId: sql`${workerId}`,
    limit: sql`${limit}`,
  });
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
