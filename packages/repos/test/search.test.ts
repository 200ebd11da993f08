import type { Job } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import { type Executor, JobRepo, JobStepRepo } from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
});

const step = { stepName: "build", actionName: "make", actionType: "shell" } as const;

/** Creates a job with one step; returns its id. */
function job(fields: Partial<JobRepo.NewJob> = {}) {
  return JobRepo.createWithSteps(t.db, { taskName: "ci", sourceType: "api", ...fields }, [step]);
}

/** Fails the job's one step with `error` (claimed first by a worker). */
async function failWith(jobId: string, error: string) {
  const w = await registerWorker(t.db);
  await JobStepRepo.markRunning(t.db, jobId, "build", w);
  await JobStepRepo.fail(t.db, { jobId, stepName: "build" }, error);
}

/** Every page of a search, following the cursors. */
async function allPages(db: Executor, query: JobRepo.JobSearch): Promise<Job[][]> {
  const pages: Job[][] = [];
  let cursor: string | undefined;
  do {
    const page = await JobRepo.search(db, { ...query, ...(cursor ? { cursor } : {}) });
    pages.push(page.jobs);
    cursor = page.nextCursor;
  } while (cursor);
  return pages;
}

const ids = (jobs: Job[]) => jobs.map((j) => j.jobId);

describe("JobRepo.search: filters", () => {
  it("combines workspace, statuses, task names, source types and a created range (AND), newest first", async () => {
    const a = await job({ workspace: "acme", taskName: "deploy", sourceType: "webhook" });
    const b = await job({ workspace: "acme", taskName: "test", sourceType: "api" });
    const c = await job({ workspace: "acme", taskName: "deploy", sourceType: "api" });
    const d = await job({ workspace: "other", taskName: "deploy", sourceType: "webhook" });
    await JobRepo.cancel(t.db, c);

    expect(ids((await JobRepo.search(t.db)).jobs)).toEqual([d, c, b, a]);
    expect(ids((await JobRepo.search(t.db, { workspace: "acme" })).jobs)).toEqual([c, b, a]);
    expect(ids((await JobRepo.search(t.db, { workspace: "acme", taskNames: ["deploy"] })).jobs)).toEqual([c, a]);
    expect(ids((await JobRepo.search(t.db, { taskNames: ["deploy", "test"], statuses: ["pending"] })).jobs)).toEqual([
      d,
      b,
      a,
    ]);
    expect(ids((await JobRepo.search(t.db, { statuses: ["cancelled", "failed"] })).jobs)).toEqual([c]);
    expect(ids((await JobRepo.search(t.db, { sourceTypes: ["webhook"] })).jobs)).toEqual([d, a]);
    expect(
      ids((await JobRepo.search(t.db, { workspace: "acme", sourceTypes: ["api"], statuses: ["pending"] })).jobs),
    ).toEqual([b]);

    // The created range is [createdFrom, createdTo).
    const at = (jobId: string, minute: number) =>
      t.db.execute(sql`update job set created_at = ${`2026-01-01T10:0${minute}:00.000500Z`}::timestamptz
        where job_id = ${jobId}`);
    for (const [i, id] of [a, b, c, d].entries()) await at(id, i);
    const from = new Date("2026-01-01T10:02:00.000Z");
    const to = new Date("2026-01-01T10:03:00.000Z");
    expect(ids((await JobRepo.search(t.db, { createdFrom: from, createdTo: to })).jobs)).toEqual([c]);
    expect(ids((await JobRepo.search(t.db, { createdFrom: to })).jobs)).toEqual([d]);
    expect(ids((await JobRepo.search(t.db, { createdTo: from, workspace: "acme" })).jobs)).toEqual([b, a]);
  });

  it("finds words in the task name, the input's values and step errors (whole words, web-search syntax)", async () => {
    const byTask = await job({ taskName: "nightly-backup" });
    const byInput = await job({ input: { branch: "release", commit: "4f2a9c", count: 42 } });
    const byError = await job({ taskName: "lint" });
    await failWith(byError, "exit 137: OOMKilled while linking payments");
    const plain = await job({ taskName: "lint", input: { branch: "main" } });

    const find = async (text: string, extra: JobRepo.JobSearch = {}) =>
      ids((await JobRepo.search(t.db, { text, ...extra })).jobs);
    expect(await find("backup")).toEqual([byTask]);
    expect(await find("nightly-backup")).toEqual([byTask]);
    expect(await find("release")).toEqual([byInput]);
    expect(await find("4f2a9c")).toEqual([byInput]);
    expect(await find("42")).toEqual([byInput]);
    expect(await find("OOMKilled")).toEqual([byError]);
    expect(await find("oomkilled payments")).toEqual([byError]);
    expect(await find('"exit 137"')).toEqual([byError]);
    expect(await find("lint")).toEqual([plain, byError]);
    // Each document (the job's; each step's error) is matched on its own.
    expect(await find("lint -payments")).toEqual([plain, byError]);
    expect(await find("lint payments")).toEqual([]);
    expect(await find("release or main")).toEqual([plain, byInput]);
    expect(await find("lint", { statuses: ["failed"] })).toEqual([byError]);
    expect(await find("branch")).toEqual([]); // keys are not searched, only values
    expect(await find("pay")).toEqual([]); // whole words
  });

  it("a step error stays findable after a retry put the step back to ready", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "ci", sourceType: "api" }, [
      { ...step, maxRetries: 1, retryBackoffSecs: 0 },
    ]);
    const w = await registerWorker(t.db);
    const [claimed] = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await JobStepRepo.fail(t.db, { jobId, stepName: "build", workerId: w, attempt: claimed?.attempts }, "flaky dns");
    expect(ids((await JobRepo.search(t.db, { text: "dns" })).jobs)).toEqual([jobId]);
  });
});

describe("JobRepo.search: pages", () => {
  it("walks every job once with an opaque cursor, stable while new jobs arrive and old ones change", async () => {
    const created: string[] = [];
    for (let i = 0; i < 23; i++) created.push(await job({ workspace: "w" }));
    // Same created_at for some: the cursor's tie-break is job_id.
    await t.db.execute(
      sql`update job set created_at = '2026-01-01T00:00:00.123456Z' where job_id = any(${sql.param(created.slice(5, 15))}::uuid[])`,
    );
    const expected = (
      await t.db.execute<{ job_id: string }>(sql`select job_id from job order by created_at desc, job_id desc`)
    ).rows.map((r) => r.job_id);

    const first = await JobRepo.search(t.db, { workspace: "w", limit: 10 });
    expect(first.nextCursor).toMatch(/^[A-Za-z0-9_-]+$/);
    // New jobs arrive and an old one is cancelled between pages: later pages do not shift.
    for (let i = 0; i < 5; i++) await job({ workspace: "w" });
    await JobRepo.cancel(t.db, expected[15] as string);
    const second = await JobRepo.search(t.db, { workspace: "w", limit: 10, cursor: first.nextCursor });
    const third = await JobRepo.search(t.db, { workspace: "w", limit: 10, cursor: second.nextCursor });
    expect(third.nextCursor).toBeUndefined();
    expect([...ids(first.jobs), ...ids(second.jobs), ...ids(third.jobs)]).toEqual(expected);
    expect(third.jobs).toHaveLength(3);

    // Exactly a page's worth left: the last full page says there is no next one.
    const pages = await allPages(t.db, { workspace: "w", limit: 14 });
    expect(pages.map((p) => p.length)).toEqual([14, 14]);
    // The cursor is a position, not a query: it works with other filters too.
    const failed = await JobRepo.search(t.db, { statuses: ["cancelled"], cursor: first.nextCursor });
    expect(ids(failed.jobs)).toEqual([expected[15]]);
  });

  it("`list` keeps working (offset pages, newest first)", async () => {
    const a = await job({ workspace: "l" });
    const b = await job({ workspace: "l" });
    expect(ids(await JobRepo.list(t.db, { workspace: "l", limit: 1, offset: 0 }))).toEqual([b]);
    expect(ids(await JobRepo.list(t.db, { workspace: "l", limit: 1, offset: 1 }))).toEqual([a]);
  });
});

describe("JobRepo.search: bad input is a typed error and reads nothing", () => {
  it("refuses malformed cursors, limits out of bounds, bad ranges and filters", async () => {
    await job();
    const refused = async (query: unknown) => errorOf(() => JobRepo.search(t.db, query as JobRepo.JobSearch));
    for (const cursor of [
      "",
      "not a cursor!",
      "abc",
      Buffer.from("[1,2]").toString("base64url"),
      Buffer.from('["2026-01-01T00:00:00.000000Z","nope"]').toString("base64url"),
      Buffer.from('["yesterday","00000000-0000-0000-0000-000000000000"]').toString("base64url"),
      42,
    ]) {
      expect(await refused({ cursor })).toMatchObject({ name: "InvalidCursorError", field: "cursor" });
    }
    expect(await refused({ limit: 0 })).toMatchObject({ name: "InvalidInputError", field: "limit" });
    expect(await refused({ limit: JobRepo.MAX_SEARCH_PAGE + 1 })).toMatchObject({ field: "limit" });
    expect(await refused({ limit: 1.5 })).toMatchObject({ field: "limit" });
    const now = new Date();
    expect(await refused({ createdFrom: now, createdTo: now })).toMatchObject({
      name: "InvalidRangeError",
      field: "createdFrom",
    });
    expect(await refused({ createdFrom: new Date("nope") })).toMatchObject({ field: "createdFrom" });
    expect(await refused({ createdTo: "2026-01-01" })).toMatchObject({ field: "createdTo" });
    expect(await refused({ statuses: ["done"] })).toMatchObject({ field: "statuses" });
    expect(await refused({ statuses: [] })).toMatchObject({ field: "statuses" });
    expect(await refused({ sourceTypes: ["email"] })).toMatchObject({ field: "sourceTypes" });
    expect(await refused({ taskNames: [""] })).toMatchObject({ field: "taskNames" });
    expect(await refused({ workspace: "" })).toMatchObject({ field: "workspace" });
    expect(await refused({ text: "  " })).toMatchObject({ field: "text" });
    expect(await refused({ text: "-- !" })).toMatchObject({ field: "text" });
    expect(await refused({ text: "x".repeat(JobRepo.MAX_SEARCH_TEXT + 1) })).toMatchObject({ field: "text" });
    expect(await refused(null)).toMatchObject({ name: "InvalidInputError" });
  });
});

describe("reads on a read-only connection (a hot standby's)", () => {
  it("search, stats and list run in a READ ONLY transaction, where a write is refused", async () => {
    const jobId = await job({ workspace: "ro", taskName: "deploy" });
    await failWith(jobId, "disk full");
    const from = new Date(Date.now() - 3_600_000);
    const to = new Date(Date.now() + 60_000);
    const out = await t.db.transaction(
      async (tx) => {
        const found = await JobRepo.search(tx, { workspace: "ro", text: "disk", statuses: ["failed"] });
        const listed = await JobRepo.list(tx, { workspace: "ro", limit: 10, offset: 0 });
        const stats = await JobRepo.stats(tx, { workspace: "ro", from, to, bucket: "1h" });
        const write = await errorOf(() => JobRepo.create(tx, { taskName: "x", sourceType: "api" }));
        return { found, listed, stats, write };
      },
      { accessMode: "read only" },
    );
    expect(ids(out.found.jobs)).toEqual([jobId]);
    expect(ids(out.listed)).toEqual([jobId]);
    expect(out.stats.jobs.failed).toBe(1);
    // 25006: read_only_sql_transaction, what a standby answers to any write.
    expect(out.write).toMatchObject({ name: "DatabaseError", code: "25006" });
  });
});
