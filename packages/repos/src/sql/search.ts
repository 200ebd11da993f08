import { JOB_SEARCH_DOCUMENT, STEP_ERROR_DOCUMENT } from "@stroem/schema";
import { type SQL, sql } from "drizzle-orm";

/** The checked filters of `JobRepo.search`; every field optional but `limit`. */
export interface SearchFilters {
  workspace?: string;
  statuses?: string[];
  taskNames?: string[];
  sourceTypes?: string[];
  createdFrom?: Date;
  createdTo?: Date;
  text?: string;
  /** Keyset position: rows strictly older than `(createdAt, jobId)`; `createdAt` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. */
  after?: { createdAt: string; jobId: string };
  /** Rows to read (the page size plus one, to know whether a next page exists). */
  limit: number;
  /**
   * Only these (workspace, task) pairs (`taskName` null: every task of the
   * workspace), deduplicated by the caller; absent: no restriction.
   */
  scope?: ReadonlyArray<{ workspace: string; taskName: string | null }>;
}

/** `created_at` to the microsecond, in UTC, as the cursor carries it (a JS Date keeps only milliseconds). */
export const CURSOR_TIME = sql`to_char(j.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * `search`'s statement: newest first by `(created_at, job_id)`, the order of
 * `idx_job_created_at`, `idx_job_workspace_created` and
 * `idx_job_workspace_task`, whose trailing columns also serve the keyset
 * condition (a row comparison, so the index walk starts at the cursor). The
 * text query is answered from the two GIN indexes (`idx_job_search` over
 * task name and input, `idx_step_result_error_search` over step errors) as the
 * union of their job ids, joined back to `job`: a text search reads the jobs
 * that match, not the table; a scope filters those matches. Without text, a
 * scope reads each allowed pair's own index range. Arrays are bound as one
 * parameter each.
 */
export function searchStatement(f: SearchFilters): SQL {
  return searchQuery(f, f.text === undefined ? undefined : { text: f.text, mode: "index" });
}

/**
 * `search`'s first try for a text query, scoped or not: the newest `budget`
 * jobs under the other filters (the scope aside), walked down the time
 * index, each kept when its (workspace, task) pair is in the scope and it
 * matches the text (its document, or an error of one of its steps, by key),
 * up to `limit`. One row per hit with `walked` (rows read), or a single row
 * of nulls with `walked` when nothing matched. A word in many jobs fills
 * the page after a few rows (the GIN path would collect every match, then
 * sort: 834 ms for a word in a third of 1,000,000 jobs). The page is exact
 * when it is full (every job not walked is older than every job walked) or
 * when `walked` is below `budget` (nothing left to walk); otherwise the
 * caller falls back to `searchStatement` (a rare word, or a scope that
 * holds few of the newest jobs: the GIN indexes, per allowed pair).
 */
export function searchWalkStatement(f: SearchFilters & { text: string }, budget: number): SQL {
  return searchQuery(f, { text: f.text, mode: "walk", budget });
}

function searchQuery(
  f: SearchFilters,
  text: { text: string; mode: "index" } | { text: string; mode: "walk"; budget: number } | undefined,
): SQL {
  const where: SQL[] = [];
  if (f.workspace !== undefined) where.push(sql`j.workspace = ${f.workspace}`);
  if (f.statuses) where.push(sql`j.status = any(${sql.param(f.statuses)}::text[])`);
  if (f.taskNames) {
    where.push(
      f.taskNames.length === 1
        ? sql`j.task_name = ${f.taskNames[0]}`
        : sql`j.task_name = any(${sql.param(f.taskNames)}::text[])`,
    );
  }
  if (f.sourceTypes) where.push(sql`j.source_type = any(${sql.param(f.sourceTypes)}::text[])`);
  if (f.createdFrom) where.push(sql`j.created_at >= ${f.createdFrom.toISOString()}::timestamptz`);
  if (f.createdTo) where.push(sql`j.created_at < ${f.createdTo.toISOString()}::timestamptz`);
  if (f.after) {
    where.push(sql`(j.created_at, j.job_id) < (${f.after.createdAt}::timestamptz, ${f.after.jobId}::uuid)`);
  }
  if (text?.mode === "index") {
    const query = sql`websearch_to_tsquery('simple', ${text.text})`;
    where.push(sql`j.job_id in (
      select job_id from job where ${sql.raw(JOB_SEARCH_DOCUMENT)} @@ ${query}
      union
      select job_id from step_result where error_message is not null and ${sql.raw(STEP_ERROR_DOCUMENT)} @@ ${query}
      union
      select job_id from step_live where error_message is not null and ${sql.raw(STEP_ERROR_DOCUMENT)} @@ ${query})`);
  }
  const filter = where.length === 0 ? sql`true` : sql.join(where, sql` and `);
  if (text?.mode === "walk") {
    const query = sql`websearch_to_tsquery('simple', ${text.text})`;
    const match = sql`(${sql.raw(JOB_SEARCH_DOCUMENT)} @@ ${query}
           -- Each walked job's own steps, by key: the document is spelled so that the
           -- GIN index cannot serve it (a bitmap scan of every match per walked row
           -- made a word in 1% of the errors take 2.3 s at 1,000,000 jobs).
           or exists (select 1 from job_step_state st where st.job_id = w.job_id and st.error_message is not null
                      and to_tsvector('simple'::regconfig, st.error_message || '') @@ ${query}))`;
    // The scope filters the walked rows, not the walk: the budget counts rows
    // read, so a scope holding few of the newest jobs costs at most `budget`
    // rows before the fallback.
    const keep = f.scope === undefined ? match : sql`${inScope(f.scope, sql`w`)} and ${match}`;
    return sql`with walked as materialized (
        select j.*, ${CURSOR_TIME} as cursor_time from job_state j
        where ${filter}
        order by j.created_at desc, j.job_id desc
        limit ${text.budget}::int
      ), hits as (
        select w.* from walked w
        where ${keep}
        order by w.created_at desc, w.job_id desc
        limit ${f.limit}
      )
      select h.*, n.walked from (select count(*)::int as walked from walked) n left join hits h on true
      order by h.created_at desc, h.job_id desc`;
  }
  if (f.scope === undefined || text !== undefined) {
    // With a text query, a scope is a filter on the text indexes' matches
    // (the walk above has answered the common words; what reaches here
    // matches few jobs, so reading them all beats walking every pair's range).
    const scoped = f.scope === undefined ? filter : sql`${filter} and ${inScope(f.scope, sql`j`)}`;
    return sql`select j.*, ${CURSOR_TIME} as cursor_time from job_state j
    where ${scoped}
    order by j.created_at desc, j.job_id desc
    limit ${f.limit}`;
  }
  // Scoped: per allowed pair, its newest `limit` rows from the index of that
  // shape (idx_job_workspace_task for a task, idx_job_workspace_created for a
  // whole workspace), then the newest `limit` of those: at most pairs x limit
  // index entries read, whatever the table's size and however rare a pair is.
  // A whole-workspace entry is the planner's choice between that range and
  // idx_job_created_at filtered by workspace (it estimates a workspace's
  // share generically): both are index walks, the second slower for a
  // workspace that holds few of the jobs.
  const { pairs, wide } = scopeJson(f.scope);
  return sql`select s.* from (
      select j.*, ${CURSOR_TIME} as cursor_time
      from jsonb_to_recordset(${pairs}::jsonb) as p(workspace text, "taskName" text)
      cross join lateral (
        select j.* from job_state j
        where j.workspace = p.workspace and j.task_name = p."taskName" and ${filter}
        order by j.created_at desc, j.job_id desc limit ${f.limit}) j
      union all
      select j.*, ${CURSOR_TIME} as cursor_time
      from jsonb_array_elements_text(${wide}::jsonb) as w(workspace)
      cross join lateral (
        select j.* from job_state j
        where j.workspace = w.workspace and ${filter}
        order by j.created_at desc, j.job_id desc limit ${f.limit}) j
    ) s
    order by s.created_at desc, s.job_id desc
    limit ${f.limit}`;
}

/** Whether the row `alias` is in the scope (one of its pairs, or a whole workspace of it). */
function inScope(scope: NonNullable<SearchFilters["scope"]>, alias: SQL): SQL {
  const { pairs, wide } = scopeJson(scope);
  return sql`((${alias}.workspace, ${alias}.task_name) in (select p.workspace, p."taskName"
        from jsonb_to_recordset(${pairs}::jsonb) as p(workspace text, "taskName" text))
      or ${alias}.workspace in (select jsonb_array_elements_text(${wide}::jsonb)))`;
}

/** A scope as the statements bind it: its (workspace, task) pairs, and its whole workspaces, as JSON. */
function scopeJson(scope: NonNullable<SearchFilters["scope"]>): { pairs: string; wide: string } {
  return {
    pairs: JSON.stringify(scope.filter((p) => p.taskName !== null)),
    wide: JSON.stringify(scope.filter((p) => p.taskName === null).map((p) => p.workspace)),
  };
}
