import { JOB_STATUSES, type Job, type JobStatus, jobState, SOURCE_TYPES, type SourceType } from "@stroem/schema";
import { type Executor, translateErrors } from "./db.js";
import { InvalidCursorError, InvalidInputError, InvalidRangeError } from "./errors.js";
import { mapRow } from "./rows.js";
import { searchStatement, searchWalkStatement } from "./sql/search.js";
import { optionalDate, requireInt, requireOneOf, requireText, requireUuid } from "./validate.js";

/** What `JobRepo.search` looks for. Every field is optional; the given ones all apply (AND). */
export interface JobSearch {
  workspace?: string;
  /** Any of these statuses. */
  statuses?: readonly JobStatus[];
  /** Any of these task names (exact). */
  taskNames?: readonly string[];
  /** Any of these source types. */
  sourceTypes?: readonly SourceType[];
  /** Created at or after. */
  createdFrom?: Date;
  /** Created before. */
  createdTo?: Date;
  /**
   * Words to find in the task name, the input's string and number values, or
   * an error message of one of the job's steps (web-search syntax: `deploy
   * -staging`, `"exit 137"`, `lint or test`; whole words, no stemming).
   */
  text?: string;
  /** `nextCursor` of the previous page; absent for the first. */
  cursor?: string;
  /** Page size, 1 to `MAX_SEARCH_PAGE`; default 50. */
  limit?: number;
  /**
   * What the reader may see (the server's access rules, resolved): only
   * jobs of these pairs; a pair without `taskName` allows every task of its
   * workspace. An empty scope sees nothing. Absent: everything.
   */
  scope?: JobScope;
}

/** The (workspace, task) pairs a reader may see. */
export type JobScope = ReadonlyArray<{ workspace: string; taskName?: string }>;

/** Most pairs a scope may hold. */
export const MAX_SCOPE_PAIRS = 1000;

/**
 * The scope checked and normalised: duplicates dropped, a task pair dropped
 * where its workspace is allowed whole, and (with a `workspace` filter) only
 * that workspace's pairs. Throws `InvalidInputError`.
 */
export function checkScope(
  scope: unknown,
  workspace?: string,
): Array<{ workspace: string; taskName: string | null }> | undefined {
  if (scope === undefined) return undefined;
  if (!Array.isArray(scope)) throw new InvalidInputError("scope", "must be an array of { workspace, taskName? }");
  if (scope.length > MAX_SCOPE_PAIRS) {
    throw new InvalidInputError("scope", `must hold at most ${MAX_SCOPE_PAIRS} pairs, got ${scope.length}`);
  }
  const whole = new Set<string>();
  const tasks = new Map<string, { workspace: string; taskName: string }>();
  for (const [i, p] of scope.entries()) {
    if (typeof p !== "object" || p === null) throw new InvalidInputError(`scope[${i}]`, "must be an object");
    const ws = requireText(`scope[${i}].workspace`, (p as { workspace?: unknown }).workspace);
    const task = (p as { taskName?: unknown }).taskName;
    if (task === undefined) whole.add(ws);
    else {
      const name = requireText(`scope[${i}].taskName`, task);
      tasks.set(JSON.stringify([ws, name]), { workspace: ws, taskName: name });
    }
  }
  const out: Array<{ workspace: string; taskName: string | null }> = [...whole].map((w) => ({
    workspace: w,
    taskName: null,
  }));
  for (const p of tasks.values()) if (!whole.has(p.workspace)) out.push(p);
  return workspace === undefined ? out : out.filter((p) => p.workspace === workspace);
}

/** A page of `search`: jobs newest first, and the cursor of the next page (absent on the last). */
export interface JobSearchPage {
  jobs: Job[];
  nextCursor?: string;
}

/**
 * How far a text search walks the newest jobs before it asks the text
 * indexes instead: `perRow` times the page (plus one), at least `min` rows.
 * Measured on 1,000,000 jobs (PostgreSQL 15, shared_buffers 128 MB, a first
 * page of 50, median of 7): `prod` in a third of them, one workspace,
 * 1,298 ms by the text indexes alone, 29 ms walking; `staging` in two thirds,
 * 5,777 against 19 ms; a word in one job 1.5 against 12.5 ms (the walk that
 * did not fill the page, then the index).
 */
export const SEARCH_WALK = { min: 1000, perRow: 20 } as const;

/** Largest page `search` returns. */
export const MAX_SEARCH_PAGE = 1000;
/** Longest text query, in characters. */
export const MAX_SEARCH_TEXT = 1000;
/** Most values one array filter (`statuses`, `taskNames`, `sourceTypes`) takes. */
export const MAX_SEARCH_VALUES = 100;

const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** The opaque cursor: base64url of `[createdAt to the microsecond, jobId]`. */
export function encodeCursor(createdAt: string, jobId: string): string {
  return Buffer.from(JSON.stringify([createdAt, jobId]), "utf8").toString("base64url");
}

/** The keyset position in a cursor; throws `InvalidCursorError` for anything `search` did not hand out. */
export function decodeCursor(cursor: unknown): { createdAt: string; jobId: string } {
  if (typeof cursor !== "string" || !/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) {
    throw new InvalidCursorError("not a cursor returned by search");
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw new InvalidCursorError("not a cursor returned by search (garbled)");
  }
  if (
    !Array.isArray(value) ||
    value.length !== 2 ||
    typeof value[0] !== "string" ||
    !CURSOR_TIME.test(value[0]) ||
    Number.isNaN(Date.parse(value[0]))
  ) {
    throw new InvalidCursorError("not a cursor returned by search (no position in it)");
  }
  try {
    requireUuid("cursor", value[1]);
  } catch {
    throw new InvalidCursorError("not a cursor returned by search (no job id in it)");
  }
  return { createdAt: value[0], jobId: value[1] as string };
}

function optionalList<T extends string>(field: string, value: unknown, check: (v: unknown) => T): T[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_SEARCH_VALUES) {
    throw new InvalidInputError(field, `must be an array of 1 to ${MAX_SEARCH_VALUES} values`);
  }
  return [...new Set(value.map(check))];
}

/**
 * Jobs matching every given filter, newest first (`created_at`, then
 * `job_id`), one page at a time. Pages are keyset pages: the cursor holds
 * the last job's `(created_at, job_id)`, so jobs created meanwhile (newer)
 * never shift later pages, and each page is an index walk from the cursor,
 * whatever the page number. Every combination of filters is served by an
 * index (EXPLAIN tests in `test/search.test.ts`): `idx_job_workspace_task`,
 * `idx_job_workspace_created` or `idx_job_created_at`, and for `text` the
 * GIN indexes `idx_job_search` and `idx_step_result_error_search`. Only reads:
 * works on a read-only connection (a hot standby). Throws, before any
 * query: `InvalidInputError` (a bad filter or a limit out of 1 to 1,000),
 * `InvalidRangeError` (`createdFrom` not before `createdTo`),
 * `InvalidCursorError`.
 */
export async function search(db: Executor, query: JobSearch = {}): Promise<JobSearchPage> {
  if (typeof query !== "object" || query === null) throw new InvalidInputError("query", "must be an object");
  const limit = query.limit === undefined ? 50 : requireInt("limit", query.limit, 1, MAX_SEARCH_PAGE);
  const createdFrom = optionalDate("createdFrom", query.createdFrom);
  const createdTo = optionalDate("createdTo", query.createdTo);
  if (createdFrom && createdTo && createdFrom >= createdTo) {
    throw new InvalidRangeError("createdFrom", "must be before createdTo");
  }
  let text: string | undefined;
  if (query.text !== undefined) {
    text = requireText("text", query.text);
    if (text.length > MAX_SEARCH_TEXT) {
      throw new InvalidInputError("text", `must be at most ${MAX_SEARCH_TEXT} characters`);
    }
    if (!/[\p{L}\p{N}]/u.test(text)) throw new InvalidInputError("text", "has no word to search for");
  }
  const filters = {
    ...(query.workspace === undefined ? {} : { workspace: requireText("workspace", query.workspace) }),
    statuses: optionalList("statuses", query.statuses, (v) => requireOneOf("statuses", v, JOB_STATUSES)),
    taskNames: optionalList("taskNames", query.taskNames, (v) => requireText("taskNames", v)),
    sourceTypes: optionalList("sourceTypes", query.sourceTypes, (v) => requireOneOf("sourceTypes", v, SOURCE_TYPES)),
    createdFrom,
    createdTo,
    text,
    after: query.cursor === undefined ? undefined : decodeCursor(query.cursor),
    limit: limit + 1,
    scope: checkScope(query.scope, query.workspace),
  };
  if (filters.scope?.length === 0) return { jobs: [] };
  type Row = Record<string, unknown> & { cursor_time: string };
  let found: Row[] | undefined;
  if (text !== undefined) {
    // A common word fills the page from the newest jobs; a rare one (or a
    // scope holding few of the newest jobs) falls back to the text indexes.
    const budget = Math.max(SEARCH_WALK.min, SEARCH_WALK.perRow * filters.limit);
    const walk = await translateErrors(db, () =>
      db.execute<Row & { walked: number }>(searchWalkStatement({ ...filters, text }, budget)),
    );
    const hits = walk.rows.filter((r) => r.job_id != null);
    if (hits.length >= filters.limit || Number(walk.rows[0]?.walked ?? 0) < budget) found = hits;
  }
  const rows = found ? { rows: found } : await translateErrors(db, () => db.execute<Row>(searchStatement(filters)));
  const page = rows.rows.slice(0, limit);
  const last = page[page.length - 1];
  const jobs = page.map((r) => mapRow(jobState, r));
  return rows.rows.length > limit && last
    ? { jobs, nextCursor: encodeCursor(last.cursor_time, last.job_id as string) }
    : { jobs };
}
