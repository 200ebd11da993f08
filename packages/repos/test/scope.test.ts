import { JOB_SEARCH_DOCUMENT } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { type SQL, sql } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { InvalidInputError, JobRepo, type JobScope } from "../src/index.js";
import { searchStatement, searchWalkStatement, statsStatement } from "../src/internal.js";
import { checkScope } from "../src/search.js";
import { errorOf } from "./helpers.js";

/**
 * Reads scoped by the server's access rules: `search`, `list`,
 * `countByStatus` and `stats` see only the allowed (workspace, task) pairs,
 * an empty scope nothing; each pair is read from its own index range (plans
 * asserted with sequential scans disabled, on 20,000 jobs).
 */
const t = useTestDb();
const JOBS = 20_000;

beforeAll(async () => {
  // 10 workspaces x 20 tasks, one job a minute, newest last; every 17th failed.
  // Each job is its definition (`job`) and its result (`job_result`).
  await t.db.execute(sql`insert into job (job_id, workspace, task_name, input, source_type, created_at)
    select md5('scope' || i)::uuid, 'ws-' || (i % 10), 'task-' || ((i / 10) % 20), jsonb_build_object('run', i),
      'api', '2026-01-01'::timestamptz + make_interval(secs => i * 60)
    from generate_series(1, ${JOBS}) i`);
  await t.db.execute(sql`insert into job_result (job_id, status, started_at, completed_at)
    select md5('scope' || i)::uuid, case when i % 17 = 0 then 'failed' else 'completed' end,
      '2026-01-01'::timestamptz + make_interval(secs => i * 60 + 5),
      '2026-01-01'::timestamptz + make_interval(secs => i * 60 + 50)
    from generate_series(1, ${JOBS}) i`);
  await t.db.execute(sql`analyze job`);
  await t.db.execute(sql`analyze job_result`);
}, 120_000);

/** Every job id of the pairs, newest first, computed without the scope machinery. */
async function expected(pairs: Array<[string, string | null]>, limit = 1_000_000): Promise<string[]> {
  const cond = pairs.map(([w, task]) =>
    task === null ? sql`workspace = ${w}` : sql`(workspace = ${w} and task_name = ${task})`,
  );
  const { rows } = await t.db.execute<{ job_id: string }>(sql`select job_id from job where ${sql.join(cond, sql` or `)}
    order by created_at desc, job_id desc limit ${limit}`);
  return rows.map((r) => r.job_id);
}

const scope: JobScope = [
  { workspace: "ws-1", taskName: "task-3" },
  { workspace: "ws-2", taskName: "task-5" },
  { workspace: "ws-7" },
  { workspace: "ws-7", taskName: "task-1" }, // inside the whole workspace: dropped
  { workspace: "ws-1", taskName: "task-3" }, // repeated: dropped
  { workspace: "ws-9", taskName: "no-such-task" },
];
const pairs: Array<[string, string | null]> = [
  ["ws-1", "task-3"],
  ["ws-2", "task-5"],
  ["ws-7", null],
];

describe("scoped reads", () => {
  it("search pages through exactly the allowed jobs, newest first, with the cursor", async () => {
    const want = await expected(pairs);
    const got: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await JobRepo.search(t.db, { scope, limit: 500, ...(cursor ? { cursor } : {}) });
      got.push(...page.jobs.map((j) => j.jobId));
      cursor = page.nextCursor;
    } while (cursor);
    expect(got).toEqual(want);
    // With other filters too (intersected), and with a workspace filter (only its pairs).
    const failed = await JobRepo.search(t.db, { scope, statuses: ["failed"], limit: 1000 });
    expect(failed.jobs.every((j) => j.status === "failed")).toBe(true);
    expect(failed.jobs.map((j) => j.jobId)).toEqual(want.filter((id) => failed.jobs.some((j) => j.jobId === id)));
    const ws1 = await JobRepo.search(t.db, { scope, workspace: "ws-1", limit: 1000 });
    expect(ws1.jobs.map((j) => j.jobId)).toEqual(await expected([["ws-1", "task-3"]]));
  });

  it("list, countByStatus and stats see the same jobs; an empty scope sees nothing", async () => {
    const want = await expected(pairs);
    expect((await JobRepo.list(t.db, { scope, limit: 50, offset: 100 })).map((j) => j.jobId)).toEqual(
      want.slice(100, 150),
    );
    const counts = await JobRepo.countByStatus(t.db, { scope });
    expect(counts.completed + counts.failed).toBe(want.length);
    const stats = await JobRepo.stats(t.db, {
      scope,
      from: new Date("2026-01-01T00:00:00Z"),
      to: new Date("2026-02-01T00:00:00Z"),
      bucket: "1d",
    });
    expect(stats.total).toBe(want.length);
    expect(stats.tasks.map((x) => x.taskName).sort()).toEqual(
      [
        ...new Set(
          (
            await t.db.execute<{ task_name: string }>(sql`select distinct task_name from job
        where job_id = any(${sql.param(want)}::uuid[])`)
          ).rows.map((r) => r.task_name),
        ),
      ].sort(),
    );
    expect(await JobRepo.search(t.db, { scope: [] })).toEqual({ jobs: [] });
    expect(await JobRepo.list(t.db, { scope: [], limit: 10, offset: 0 })).toEqual([]);
    expect(Object.values(await JobRepo.countByStatus(t.db, { scope: [] })).every((n) => n === 0)).toBe(true);
    const none = await JobRepo.stats(t.db, {
      scope: [],
      from: new Date("2026-01-01T00:00:00Z"),
      to: new Date("2026-02-01T00:00:00Z"),
      bucket: "1d",
    });
    expect(none.total).toBe(0);
  });

  it("bad scopes are refused before any query", async () => {
    for (const bad of [{ workspace: "" }, { workspace: "w", taskName: "" }, "ws-1", null]) {
      expect(await errorOf(() => JobRepo.search(t.db, { scope: [bad] as unknown as JobScope }))).toBeInstanceOf(
        InvalidInputError,
      );
    }
    expect(
      await errorOf(() => JobRepo.search(t.db, { scope: Array.from({ length: 1001 }, () => ({ workspace: "w" })) })),
    ).toMatchObject({ field: "scope" });
  });
});

describe("text search: a common word walks the newest jobs, a rare one asks the text indexes", () => {
  /** Every match, newest first, by the GIN path alone (searchStatement). */
  async function byIndex(text: string, limit: number, extra: Record<string, unknown> = {}) {
    const { rows } = await t.db.execute<{ job_id: string }>(
      searchStatement({ text, limit, ...extra } as Parameters<typeof searchStatement>[0]),
    );
    return rows.map((r) => r.job_id);
  }

  it("same pages either way: a word in every job, one in 1 of 20 jobs, one in a single job, with filters and cursors", async () => {
    for (const [text, extra] of [
      ["task", {}],
      ["task-3", {}],
      ["task-3", { workspace: "ws-1" }],
      ["12345", {}],
      ["task -task-3", { statuses: ["failed"] }],
    ] as Array<[string, Record<string, unknown>]>) {
      const want = await byIndex(text, 100_000, extra);
      const got: string[] = [];
      let cursor: string | undefined;
      for (let pages = 0; pages < 4; pages++) {
        const page = await JobRepo.search(t.db, { text, limit: 50, ...extra, ...(cursor ? { cursor } : {}) });
        got.push(...page.jobs.map((j) => j.jobId));
        cursor = page.nextCursor;
        if (!cursor) break;
      }
      expect([text, got]).toEqual([text, want.slice(0, got.length)]);
      expect(got.length).toBe(Math.min(want.length, 200));
    }
  });

  it("scoped alike: the walk keeps the allowed pairs' jobs, and the pages equal the text indexes' per pair", async () => {
    // Allowed pairs holding many of the newest jobs (the walk fills the page), a
    // pair of a few old jobs only (the walk reads its budget: the fallback), a whole workspace.
    const wide: JobScope = [{ workspace: "ws-1" }, { workspace: "ws-2", taskName: "task-4" }];
    const narrow: JobScope = [{ workspace: "ws-3", taskName: "task-9" }];
    for (const [text, scope, extra] of [
      ["task", wide, {}],
      ["task -task-3", wide, { statuses: ["completed"] }],
      ["task", narrow, {}],
      ["12345", wide, {}],
      ["task", [{ workspace: "ws-0", taskName: "no-such-task" }], {}],
    ] as Array<[string, JobScope, Record<string, unknown>]>) {
      const want = await byIndex(text, 100_000, { ...extra, scope: checkScope(scope) });
      const got: string[] = [];
      let cursor: string | undefined;
      for (let pages = 0; pages < 4; pages++) {
        const page = await JobRepo.search(t.db, {
          text,
          scope,
          limit: 50,
          ...extra,
          ...(cursor ? { cursor } : {}),
        });
        got.push(...page.jobs.map((j) => j.jobId));
        for (const j of page.jobs) {
          expect(scope.some((p) => p.workspace === j.workspace && (p.taskName ?? j.taskName) === j.taskName)).toBe(
            true,
          );
        }
        cursor = page.nextCursor;
        if (!cursor) break;
      }
      expect([text, got]).toEqual([text, want.slice(0, got.length)]);
      expect(got.length).toBe(Math.min(want.length, 200));
    }
    // An oracle that is neither path: the narrow pair's matching jobs, read plainly.
    const { rows: plain } = await t.db.execute<{ job_id: string }>(sql`select job_id from job
      where workspace = 'ws-3' and task_name = 'task-9'
        and ${sql.raw(JOB_SEARCH_DOCUMENT)} @@ websearch_to_tsquery('simple', 'task')
      order by created_at desc, job_id desc limit 50`);
    expect(plain.length).toBeGreaterThan(0);
    expect((await JobRepo.search(t.db, { text: "task", scope: narrow })).jobs.map((j) => j.jobId)).toEqual(
      plain.map((r) => r.job_id),
    );
    // The text indexes' path under a scope reads the matches (GIN), not each pair's range.
    const byGin = await plan(searchStatement({ text: "12345", limit: 51, scope: checkScope(wide) }));
    expect(byGin, byGin).toMatch(/Bitmap Index Scan on idx_job_search/);
    expect(byGin, byGin).not.toMatch(/idx_job_workspace_task|idx_job_workspace_created/);
    // The walk alone fills a page for the wide scope, and reads its whole budget for the narrow one.
    const walk = async (scope: JobScope) =>
      (
        await t.db.execute<{ job_id: string | null; walked: number }>(
          searchWalkStatement({ text: "task", limit: 51, scope: checkScope(scope) }, 1020),
        )
      ).rows;
    expect((await walk(wide)).filter((r) => r.job_id !== null)).toHaveLength(51);
    const few = await walk(narrow);
    expect(few.filter((r) => r.job_id !== null).length).toBeLessThan(51);
    expect(few[0]?.walked).toBe(1020);
  });

  it("the walk reads at most its budget of the newest rows (index-served), else falls back", async () => {
    const common = await plan(searchWalkStatement({ text: "task", limit: 51 }, 1020));
    expect(common, common).toMatch(/Index Scan Backward using idx_job_created_at/);
    expect(common, common).not.toMatch(/Seq Scan on job |Bitmap Index Scan on idx_job_search/);
    // A rare word: the walk's page is not full and it read its whole budget, so search asks the GIN index.
    const { rows } = await t.db.execute<{ job_id: string | null; walked: number }>(
      searchWalkStatement({ text: "12345", limit: 51 }, 1020),
    );
    expect(rows.filter((r) => r.job_id !== null).length).toBeLessThan(51);
    expect(rows[0]?.walked).toBe(1020);
    expect((await JobRepo.search(t.db, { text: "12345" })).jobs).toHaveLength(1);
  });
});

/** EXPLAIN's lines, sequential scans disabled (a Seq Scan left means no index can serve it). */
async function plan(statement: SQL): Promise<string> {
  return t.db.transaction(async (tx) => {
    await tx.execute(sql`set local enable_seqscan = off`);
    const rows = await tx.execute<{ "QUERY PLAN": string }>(sql`explain (costs off) ${statement}`);
    return rows.rows.map((r) => r["QUERY PLAN"]).join("\n");
  });
}

describe("scoped plans: one index range per allowed pair, 500 pairs", () => {
  const many = checkScope(
    Array.from({ length: 500 }, (_, i) =>
      i % 50 === 0 ? { workspace: `ws-${i % 10}` } : { workspace: `ws-${i % 10}`, taskName: `task-${i % 20}` },
    ),
  );
  it("search and list walk idx_job_workspace_task per task pair, an index per whole workspace, never the table", async () => {
    const text = await plan(searchStatement({ scope: many, limit: 51 }));
    expect(text, text).not.toMatch(/Seq Scan on job/);
    // Each pair's walk is cut by its own Limit. Between the two, only the read view's (`job_state`)
    // left joins to each job's state rows (its result, its live row), which keep the walk's order.
    expect(text, text).toMatch(
      /Limit\n(\s+-> {2}Nested Loop Left Join\n(\s+Join Filter: .*\n)?)*\s+-> {2}Index Scan Backward using idx_job_workspace_task on job j\n\s+Index Cond: \(\(workspace = p\.workspace\) AND \(task_name = p\."taskName"\)\)/,
    );
    // The state rows come by key, never by a scan of their tables.
    expect(text, text).not.toMatch(/Seq Scan/);
    expect(text, text).toMatch(
      /Index Scan using job_result_pkey on job_result r\n\s+Index Cond: \(job_id = j\.job_id\)/,
    );
    expect(text.match(/Index Scan Backward using idx_job_(workspace_created|created_at)/g), text).toHaveLength(1);
  });

  it("stats reads each pair's window from its index range", async () => {
    const text = await plan(
      statsStatement({
        scope: many,
        from: new Date("2026-01-01T00:00:00Z"),
        to: new Date("2026-01-02T00:00:00Z"),
        bucketSecs: 3600,
      }),
    );
    // Each branch reads the window through an index (the pairs' ranges or the time range), never the table.
    expect(text, text).not.toMatch(/Seq Scan on job /);
    expect(text, text).toMatch(
      /Index (Only )?Scan.* on (idx_job_workspace_task|idx_job_created_at)|Bitmap Index Scan on idx_job/,
    );
  });
});
