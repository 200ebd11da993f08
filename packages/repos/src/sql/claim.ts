import { SERVER_ACTION_TYPES } from "@stroem/schema";
import { type SQL, type SQLChunk, sql } from "drizzle-orm";
import { type Statement, statement } from "../statement.js";
import { type FinishValues, finishCall } from "./report.js";

/**
 * Starts the jobs of several steps among the steps in the CTE `claimed` (a
 * job is `running` from its first started step): their `job_live` rows. A
 * job of one step has none: the claim's own update of the step's live row
 * sets `job_started_at`. SKIP LOCKED: a job row locked by another claimer
 * (who starts it) or by a report (which settles it, and sets it running if
 * it must) never makes a claim wait.
 */
const startJobs = sql`
    started_jobs as (
      update job_live
      set status = 'running', started_at = coalesce(job_live.started_at, now())
      where job_live.job_id in (
        select j.job_id from job_live j
        where j.job_id in (select job_id from claimed) and j.status = 'pending'
        for no key update skip locked
      )
    )`;

/**
 * A claimed step as the repos return it (`job_step_state`'s columns but its
 * routing, `when` and `forEach`, which a worker does not read): its
 * definition `d` (job_step) with its live row `c`; a loop instance's item
 * and place in its loop.
 */
const claimedColumns = sql`d.job_id, d.step_name, d.action_name, d.action_type, d.action_image, d.action_spec,
      d.input, c.output, c.status, c.worker_id, c.started_at, c.completed_at, c.error_message, d.depends_on,
      d.continue_on_failure, c.attempts, c.rescues, c.ready_at, d.dependants, c.deps_unfinished, c.deps_failed,
      c.deps_completed, c.propagated, c.max_retries, d.retry_backoff_secs, d.retry_strategy, d.retry_jitter,
      c.cancel_requested_at, d.timeout_secs, c.suspended_at, c.retry_history, d.loop_source, d.loop_index,
      d.loop_total, d.loop_item`;

/** The definitions of the claimed steps, each by key (joined alone, the planner may read job_step whole). */
const definitions = sql`join job_step d on d.job_id = c.job_id and d.step_name = c.step_name
      and d.job_id = any(array(select job_id from claimed))`;

/**
 * The routes a worker may take (`step_live.route`), as a text[]: with no
 * tags, its capabilities (an untagged step's route is its ability); with
 * tags, also the registered routes (`step_route`) of its capabilities whose
 * tags it all has, and, when it is exclusive, only the routes that require
 * exactly its tags (Strøm's rule: an exclusive worker takes only steps that
 * require all of its tags; it may take none that require a tag it lacks).
 */
function routesOf(p: { actionTypes: SQLChunk; tags: SQLChunk; exclusive: SQLChunk }): SQL {
  return sql`array(
        select c from unnest(${p.actionTypes}::text[]) as c where not ${p.exclusive}::boolean
        union all
        select r.route from step_route r
        where r.ability = any(${p.actionTypes}::text[]) and r.tags <@ ${p.tags}::text[]
          and (not ${p.exclusive}::boolean or r.tags @> ${p.tags}::text[]))`;
}

/**
 * The claim: up to `limit` of the oldest ready steps on the worker's routes
 * (an untagged worker's routes are its capabilities: see `routesOf`), moved
 * to `running` for `workerId` (`started_at`, `attempts + 1`): an update
 * of each step's live row (`step_live`) and nothing else for a job of one
 * step. Returns the claimed steps oldest first, each with the outputs of the
 * steps it depends on (`dependency_outputs`).
 *
 * Per route, a LATERAL sub-select walks `idx_step_live_claim`
 * (`route, ready_at, job_id, step_name WHERE status = 'ready'`) from its
 * oldest row, locking with SKIP LOCKED, so a `shell` claim never walks past
 * ready `docker` steps, nor an untagged worker past steps that require a
 * tag (ready steps this worker cannot take cost it nothing), and
 * `ready_at <= now()` stops the walk at steps that are not due yet. The
 * outer ORDER BY / LIMIT keeps the oldest `limit` of those (with several
 * routes, up to `limit` rows per route are locked for the statement's few
 * milliseconds and the surplus is left ready). The CTE fences the locked
 * sub-select: Postgres runs it once, so the UPDATE touches exactly the rows
 * it locked (Oban's lesson).
 */
function claimQuery(
  multiple: boolean,
  p: { actionTypes: SQLChunk; workerId: SQLChunk; limit: SQLChunk; routes?: SQL },
  report?: SQL,
): SQL {
  // With a report first (reportAndClaim): the claim walks only once the
  // report's function has run and accepted it (a one-time filter on the
  // CTE `f`), so a refused report claims nothing.
  const gate = report ? sql` and exists (select 1 from f where f.result in ('ok', 'repeated'))` : sql``;
  // One capability and no tags (the usual worker): the index walk alone, no outer sort.
  const next = multiple
    ? sql`
      select c.job_id, c.step_name
      from unnest(${p.routes ?? sql`${p.actionTypes}::text[]`}) as r(route)
      cross join lateral (
        select s.job_id, s.step_name, s.ready_at
        from step_live s
        where s.status = 'ready' and s.route = r.route and s.ready_at <= now()${gate}
        order by s.ready_at, s.job_id, s.step_name
        limit ${p.limit}
        for update skip locked
      ) c
      order by c.ready_at, c.job_id, c.step_name
      limit ${p.limit}`
    : sql`
      select s.job_id, s.step_name
      from step_live s
      where s.status = 'ready' and s.route = ${p.actionTypes} and s.ready_at <= now()${gate}
      order by s.ready_at, s.job_id, s.step_name
      limit ${p.limit}
      for update skip locked`;
  const head = report ? sql`with f as materialized (${report}), next as (` : sql`with next as (`;
  return sql`
    ${head}${next}
    ), claimed as (
      update step_live s
      set status = 'running', worker_id = ${p.workerId}::uuid, started_at = now(), attempts = s.attempts + 1,
        job_started_at = coalesce(s.job_started_at, now())
      from next
      where s.job_id = next.job_id and s.step_name = next.step_name
      returning s.*
    ), ${startJobs}
    ${
      report
        ? sql`select f.*, x.* from f left join (
            select ${claimedColumns}, ${dependencyOutputs} from claimed c ${definitions}) x on true`
        : sql`select ${claimedColumns}, ${dependencyOutputs} from claimed c ${definitions}
            order by c.ready_at, c.job_id, c.step_name`
    }`;
}

/**
 * Per claimed step `c` (definition `d`), the outputs of the steps it depends
 * on, by name (`{}` for a step without dependencies): what a worker renders
 * its inputs from. Each parent is read by key from `step_result` (a ready
 * step's parents are finished). A step without dependencies skips the
 * sub-query (the CASE): run for every row, it added about 30 µs per claimed
 * step to a claim of 50 (pgbench on 40,000 ready one-step jobs, PostgreSQL
 * 15.18, fsync on, synchronous_commit off, 4 clients, alternated: 6.5–7.6 ms
 * a claim without it, 7.8–8.9 with it, 7.1–7.7 with the CASE;
 * `packages/schema/docs/wal-anatomy/claim50*.pgb`).
 */
const dependencyOutputs = sql`case when c.deps_total = 0 then '{}'::jsonb
      else (select coalesce(jsonb_object_agg(p.step_name, p.output), '{}'::jsonb)
            from step_result p where p.job_id = c.job_id and p.step_name = any(d.depends_on)) end as dependency_outputs`;

type ClaimValues = {
  actionTypes: string | string[];
  workerId: string;
  limit?: number;
  tags?: string[];
  exclusive?: boolean;
};
const placeholders = {
  actionTypes: sql.placeholder("actionTypes"),
  workerId: sql.placeholder("workerId"),
  limit: sql.placeholder("limit"),
};
const routed = routesOf({
  actionTypes: placeholders.actionTypes,
  tags: sql.placeholder("tags"),
  exclusive: sql.placeholder("exclusive"),
});
// Claims run with a literal limit (`limit 1`, `limit 50`): with `limit $n`
// Postgres judges the generic plan worse than a custom one (it cannot know n
// is small) and re-plans the four-part statement on every execution (seen in
// pg_prepared_statements.custom_plans; perf put the planner at 18% of the
// backends' time; figures in the README). With the literal it keeps
// the generic plan after five executions. One prepared statement per batch
// size a process uses, for up to LITERAL_SIZES sizes; others take `$n`.
const LITERAL_SIZES = 16;
type Claims = { oneType: Statement<ClaimValues>; types: Statement<ClaimValues>; routed: Statement<ClaimValues> };
const byLimit = new Map<number, Claims>();
const anyLimit: Claims = {
  oneType: statement<ClaimValues>("claim_one_type", claimQuery(false, placeholders)),
  types: statement<ClaimValues>("claim_types", claimQuery(true, placeholders)),
  routed: statement<ClaimValues>("claim_routed", claimQuery(true, { ...placeholders, routes: routed })),
};

function claimsFor(limit: number): Claims {
  const known = byLimit.get(limit);
  if (known) return known;
  if (byLimit.size >= LITERAL_SIZES || !Number.isSafeInteger(limit) || limit < 1) return anyLimit;
  const literal = { ...placeholders, limit: sql.raw(String(limit)) };
  const claims = {
    oneType: statement<ClaimValues>(`claim_one_type_${limit}`, claimQuery(false, literal)),
    types: statement<ClaimValues>(`claim_types_${limit}`, claimQuery(true, literal)),
    routed: statement<ClaimValues>(`claim_routed_${limit}`, claimQuery(true, { ...literal, routes: routed })),
  };
  byLimit.set(limit, claims);
  return claims;
}

/**
 * Who claims: a worker's capabilities, tags and exclusivity, checked
 * (`checkRouting` in steps/claim.ts).
 */
export interface Routing {
  capabilities: readonly string[];
  tags: readonly string[];
  exclusive: boolean;
}

/**
 * Which of the three claims a worker runs: one capability without tags (the
 * index walk alone), several without tags (one walk per capability), or
 * with tags (one walk per route of `routesOf`). A worker without tags that
 * is exclusive takes only untagged steps: the same as one that is not.
 */
function pick<T>(r: Routing, c: { oneType: T; types: T; routed: T }) {
  if (r.tags.length > 0)
    return {
      statement: c.routed,
      values: { actionTypes: [...r.capabilities], tags: [...r.tags], exclusive: r.exclusive },
    };
  return r.capabilities.length === 1
    ? { statement: c.oneType, values: { actionTypes: r.capabilities[0] as string } }
    : { statement: c.types, values: { actionTypes: [...r.capabilities] } };
}

/** The prepared claim for this worker, and its values. */
export function preparedClaim(
  routing: Routing,
  workerId: string,
  limit: number,
): { statement: Statement<ClaimValues>; values: ClaimValues } {
  const { statement, values } = pick(routing, claimsFor(limit));
  return { statement, values: { ...values, workerId, limit } };
}

const one = { ...placeholders, limit: sql.raw("1") };
type ReportAndClaimValues = FinishValues & { actionTypes: string | string[]; tags?: string[]; exclusive?: boolean };
const reportFirst = finishCall(sql`true`);
const REPORT_AND_CLAIM = {
  oneType: statement<ReportAndClaimValues>("report_and_claim_one_type", claimQuery(false, one, reportFirst)),
  types: statement<ReportAndClaimValues>("report_and_claim_types", claimQuery(true, one, reportFirst)),
  routed: statement<ReportAndClaimValues>(
    "report_and_claim_routed",
    claimQuery(true, { ...one, routes: routed }, reportFirst),
  ),
};

/**
 * A report (`stroem_finish_step`, as `complete` / `fail` run it) and, once it
 * is accepted, the claim of the worker's next ready step, in one statement:
 * one round trip and one commit where a report then a claim take two. The
 * answer is one row: the report's columns (`FinishRow`), then the claimed
 * step's (all null when nothing was claimed).
 */
export function preparedReportAndClaim(
  routing: Routing,
  values: FinishValues,
): { statement: Statement<ReportAndClaimValues>; values: ReportAndClaimValues } {
  const picked = pick(routing, REPORT_AND_CLAIM);
  return { statement: picked.statement, values: { ...values, ...picked.values } };
}

/**
 * The claim as a Drizzle `sql` with its values bound (for EXPLAIN in tests):
 * for capabilities alone, or a worker's routing (with tags: the routed claim).
 */
export function claimStatement(worker: readonly string[] | Routing, workerId: string, limit: number): SQL {
  const r: Routing = Array.isArray(worker)
    ? { capabilities: worker as readonly string[], tags: [], exclusive: false }
    : (worker as Routing);
  const multiple = r.capabilities.length > 1 || r.tags.length > 0;
  const actionTypes = multiple ? sql.param([...r.capabilities]) : sql`${r.capabilities[0]}`;
  return claimQuery(multiple, {
    actionTypes,
    workerId: sql`${workerId}`,
    limit: sql`${limit}`,
    routes:
      r.tags.length > 0
        ? routesOf({ actionTypes, tags: sql.param([...r.tags]), exclusive: sql`${r.exclusive}` })
        : undefined,
  });
}

/**
 * Whether a worker is registered: asked only when a claim found nothing (a
 * claim that moves a step hits the `step_live -> worker` foreign key
 * instead), so an unregistered worker is refused on an empty queue too.
 */
export const WORKER_EXISTS = statement<{ workerId: string }>(
  "worker_exists",
  sql`select 1 from worker where worker_id = ${sql.placeholder("workerId")}::uuid`,
);

/**
 * A directed claim (`markRunning`): one named ready step moved to `running`
 * for `workerId`, starting its job like the claim. Returns one row when it
 * moved, none when the step was not ready (or does not exist).
 */
export function directedClaimStatement(jobId: string, stepName: string, workerId: string): SQL {
  return sql`
    with claimed as (
      update step_live s
      set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = s.attempts + 1,
        job_started_at = coalesce(s.job_started_at, now())
      where s.job_id = ${jobId} and s.step_name = ${stepName} and s.status = 'ready'
        and s.route <> all(${sql.param([...SERVER_ACTION_TYPES])}::text[])
      returning s.job_id
    ), ${startJobs}
    select job_id from claimed`;
}
