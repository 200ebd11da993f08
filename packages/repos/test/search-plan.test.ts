import { useTestDb } from "@stroem/testing/fixture";
import { type SQL, sql } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { searchStatement, statsStatement } from "../src/internal.js";
import type { SearchFilters } from "../src/sql/search.js";

const t = useTestDb();

const JOBS = 20_000;

/**
 * The plans of `search` and `stats` for their main shapes, on 20,000 finished
 * jobs (60,000 steps; definitions and results) generated set-based, with the planner's statistics
 * taken and sequential scans disabled: a plan that still holds a Seq Scan
 * has no index to serve it (Postgres falls back to a disabled node only when
 * nothing else can answer). Node types and index names are asserted, never
 * timings (`pnpm bench --stats` measures those at a million jobs).
 */
beforeAll(async () => {
  // Each job is its definition (`job`) and its result (`job_result`); each step its definition
  // (`job_step`) and its result (`step_result`).
  await t.db.execute(sql`insert into job (job_id, workspace, task_name, input, source_type, created_at)
    select md5('plan' || i)::uuid, 'ws-' || (i % 10), 'task-' || ((i / 10) % 20),
      jsonb_build_object('branch', 'branch-' || (i % 500), 'run', i),
      (array['trigger', 'user', 'api', 'webhook'])[1 + (i / 7) % 4],
      '2026-01-01'::timestamptz + make_interval(secs => i * 60)
    from generate_series(1, ${JOBS}) i`);
  await t.db.execute(sql`insert into job_result (job_id, status, started_at, completed_at, steps_failed)
    select md5('plan' || i)::uuid, case when i % 17 = 0 then 'failed' else 'completed' end,
      '2026-01-01'::timestamptz + make_interval(secs => i * 60 + 5),
      '2026-01-01'::timestamptz + make_interval(secs => i * 60 + 50),
      case when i % 17 = 0 then 1 else 0 end
    from generate_series(1, ${JOBS}) i`);
  await t.db.execute(sql`insert into job_step (job_id, step_name, action_name)
    select j.job_id, 's' || k, 'run' from job j cross join generate_series(0, 2) k`);
  await t.db.execute(sql`insert into step_result (job_id, step_name, action_type, status, ready_at, started_at,
      completed_at, error_message, attempts, propagated, job_started_at)
    select r.job_id, 's' || k, 'shell', case when r.status = 'failed' and k = 2 then 'failed' else 'completed' end,
      r.started_at, r.started_at + interval '1 s', r.completed_at,
      case when r.status = 'failed' and k = 2 then 'exit 1: tests failed in module payments' end, 1, true, r.started_at
    from job_result r cross join generate_series(0, 2) k`);
  await t.db.execute(sql`analyze job`);
  await t.db.execute(sql`analyze job_result`);
  await t.db.execute(sql`analyze job_step`);
  await t.db.execute(sql`analyze step_result`);
  await t.db.execute(sql`analyze job_live`);
  await t.db.execute(sql`analyze step_live`);
}, 120_000);

/** EXPLAIN's lines for the statement, sequential scans disabled. */
async function plan(statement: SQL): Promise<string> {
  return t.db.transaction(async (tx) => {
    await tx.execute(sql`set local enable_seqscan = off`);
    const rows = await tx.execute<{ "QUERY PLAN": string }>(sql`explain (costs off) ${statement}`);
    return rows.rows.map((r) => r["QUERY PLAN"]).join("\n");
  });
}

const JOB_INDEXES = /idx_job_created_at|idx_job_workspace_created|idx_job_workspace_task/;
const after = { createdAt: "2026-01-05T00:00:00.000000Z", jobId: "8f0e2c1a-0000-4000-8000-000000000000" };

function expectIndexServed(text: string) {
  expect(text, text).not.toMatch(/Seq Scan/);
  expect(text, text).toMatch(JOB_INDEXES);
}

describe("search: every main shape is index-served", () => {
  const shapes: Array<[string, Omit<SearchFilters, "limit">, RegExp?]> = [
    ["no filter", {}, /Index Scan Backward using idx_job_created_at/],
    ["no filter, next page", { after }, /Index Cond: \(ROW\(created_at, job_id\) < ROW\(/],
    ["workspace", { workspace: "ws-3" }],
    ["workspace, next page", { workspace: "ws-3", after }, /ROW\(created_at, job_id\) < ROW\(/],
    ["workspace and one task", { workspace: "ws-3", taskNames: ["task-4"] }, /idx_job_workspace_task/],
    ["workspace, task, next page", { workspace: "ws-3", taskNames: ["task-4"], after }, /idx_job_workspace_task/],
    ["workspace and two tasks", { workspace: "ws-3", taskNames: ["task-4", "task-5"] }],
    ["statuses and source types", { statuses: ["failed"], sourceTypes: ["api", "user"] }],
    ["one task, no workspace", { taskNames: ["task-4"] }],
    [
      "created range",
      { createdFrom: new Date("2026-01-03T00:00:00Z"), createdTo: new Date("2026-01-04T00:00:00Z") },
      /Index Cond: .*created_at >=/,
    ],
    [
      "everything but text",
      {
        workspace: "ws-3",
        statuses: ["failed", "completed"],
        taskNames: ["task-4"],
        sourceTypes: ["api"],
        createdFrom: new Date("2026-01-03T00:00:00Z"),
        createdTo: new Date("2026-01-09T00:00:00Z"),
        after,
      },
    ],
  ];
  for (const [name, filters, extra] of shapes) {
    it(name, async () => {
      const text = await plan(searchStatement({ ...filters, limit: 51 }));
      expectIndexServed(text);
      if (extra) expect(text, text).toMatch(extra);
    });
  }

  for (const [name, filters] of [
    ["text", { text: "payments" }],
    ["text with workspace, status and a cursor", { text: "branch-42", workspace: "ws-2", statuses: ["failed"], after }],
    ["text with a created range", { text: "task-3", createdFrom: new Date("2026-01-03T00:00:00Z") }],
  ] as Array<[string, Omit<SearchFilters, "limit">]>) {
    it(`${name}: both GIN indexes, then the job by its key or an index range`, async () => {
      const text = await plan(searchStatement({ ...filters, limit: 51 }));
      expect(text, text).not.toMatch(/Seq Scan/);
      expect(text, text).toMatch(/Bitmap Index Scan on idx_job_search/);
      expect(text, text).toMatch(/Bitmap Index Scan on idx_step_result_error_search/);
      expect(text, text).toMatch(/job_pkey|idx_job_created_at|idx_job_workspace_created|idx_job_workspace_task/);
    });
  }
});

describe("stats: the window is an index range, steps come by primary key", () => {
  const day = { from: new Date("2026-01-05T00:00:00Z"), to: new Date("2026-01-06T00:00:00Z"), bucketSecs: 3600 };
  for (const [name, filters, index] of [
    ["a workspace", { workspace: "ws-1" }, /idx_job_workspace_created|idx_job_workspace_task/],
    ["a workspace and task", { workspace: "ws-1", taskName: "task-2" }, /idx_job_workspace_task/],
    ["every workspace", {}, /idx_job_created_at/],
    ["a task, every workspace", { taskName: "task-2" }, /idx_job_created_at|idx_job_workspace_task/],
  ] as Array<[string, { workspace?: string; taskName?: string }, RegExp]>) {
    it(name, async () => {
      const text = await plan(statsStatement({ ...day, ...filters }));
      expect(text, text).not.toMatch(/Seq Scan/);
      expect(text, text).toMatch(index);
      expect(text, text).toMatch(/(Index Scan using|Bitmap Index Scan on) job_step_job_id_step_name_pk/);
      // The window is read once (a materialised CTE), whatever the figures computed from it.
      expect(text.match(/CTE w\b/g)).toHaveLength(1);
    });
  }
});
