import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, inject, it } from "vitest";
import { createPool, InvalidInputError, JobRepo, JobStepRepo, listenForReady } from "../src/index.js";
import { registerWorker } from "./helpers.js";

const t = useTestDb();
const { schema = "public" } = inject("stroemPg");

describe("the tables' schema", () => {
  it(`the tables, and the functions reports call, live in the run's schema (${schema}) and nowhere else`, async () => {
    const { rows } = await t.db.execute<{
      current: string;
      job: string | null;
      fn: string | null;
      elsewhere: number;
    }>(sql`
      select current_schema() as current,
             to_regclass(${`${schema}.job`})::text as job, -- printed unqualified: it is on the search path
             (select n.nspname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where p.proname = 'stroem_finish_step') as fn,
             (select count(*)::int from pg_tables where tablename = 'job_step' and schemaname <> ${schema}) as elsewhere`);
    expect(rows[0]).toEqual({
      current: schema,
      job: "job",
      fn: schema,
      elsewhere: 0,
    });
    // And the worker path works there.
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "api" }, [
      { stepName: "a", actionName: "x", actionType: "shell" },
    ]);
    const w = await registerWorker(t.db);
    const [step] = await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    expect(
      await JobStepRepo.complete(t.db, { jobId, stepName: "a", workerId: w, attempt: step?.attempts }),
    ).toMatchObject({
      jobStatus: "completed",
    });
  });

  // A transaction pooler refuses the startup option (the second half checks createPool says so).
  it.skipIf(t.pooler)("createPool({ schema }) sets the search path; a bad name or a pooler is refused", async () => {
    const plain = new URL(t.url);
    plain.searchParams.delete("options"); // the run's own schema, when it has one (a URL's options win over the pool's)
    const db = createPool(plain.toString(), { max: 1, schema: "some_schema" });
    try {
      const { rows } = await db.execute<{ path: string }>(sql`select current_setting('search_path') as path`);
      expect(rows[0]?.path).toBe("some_schema");
    } finally {
      await db.$client.end();
    }
    expect(() => createPool(t.url, { schema: "Bad-Name" })).toThrow(InvalidInputError);
    expect(() => createPool(t.url, { schema: "x; drop table job" })).toThrow(InvalidInputError);
    expect(() => createPool(t.url, { schema: "stroem", pooler: "transaction" })).toThrow(/search_path/);
    // A URL with options of its own would silently win over the option: refused, with both named.
    const withOptions = new URL(t.url);
    withOptions.searchParams.set("options", "-c search_path=elsewhere");
    expect(() => createPool(withOptions.toString(), { schema: "stroem" })).toThrow(
      /options.schema: the URL sets options="-c search_path=elsewhere"/,
    );
    await expect(listenForReady(withOptions.toString(), { schema: "stroem" })).rejects.toThrow(InvalidInputError);
  });
});

describe("write amplification: what the hot path's UPDATEs pay for", () => {
  // The UPDATEs that start and settle a job set these; an index naming one of
  // them (key, expression or predicate) makes every such UPDATE non-HOT.
  const HOT_PATH_JOB_COLUMNS = ["status", "started_at", "completed_at", "steps_unfinished", "steps_failed", "output"];

  it("no index on job names a column the claim or the report changes", async () => {
    const { rows } = await t.db.execute<{ index: string; column: string }>(sql`
      select c.relname as index, a.attname as column
      from pg_index i
      join pg_class c on c.oid = i.indexrelid
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum > 0
      where i.indrelid = 'job'::regclass
        and (a.attnum = any(i.indkey)
          or coalesce(pg_get_expr(i.indpred, i.indrelid), '') ~ ('\m' || a.attname || '\M')
          or coalesce(pg_get_expr(i.indexprs, i.indrelid), '') ~ ('\m' || a.attname || '\M'))
      order by 1, 2`);
    expect(rows.filter((r) => HOT_PATH_JOB_COLUMNS.includes(r.column))).toEqual([]);
    expect(rows.length).toBeGreaterThan(0); // the query sees the indexes (job_pkey at least)
  });

  it("a one-step job's start and settle are HOT updates of its row", async () => {
    const w = await registerWorker(t.db);
    await JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "api", timeoutSecs: 60 }, [
      { stepName: "a", actionName: "x", actionType: "shell" },
    ]);
    const counts = await t.db.transaction(async (tx) => {
      const [step] = await JobStepRepo.claimReadySteps(tx, ["shell"], w, 1);
      if (!step) throw new Error("expected a ready step");
      await JobStepRepo.complete(tx, { jobId: step.jobId, stepName: "a", workerId: w, attempt: 1 });
      const r = await tx.execute<{ updated: number; hot: number }>(sql`
        select pg_stat_get_xact_tuples_updated('job'::regclass)::int as updated,
               pg_stat_get_xact_tuples_hot_updated('job'::regclass)::int as hot`);
      return r.rows[0];
    });
    // Every UPDATE of the job row in the transaction (start, settle) was HOT.
    expect(counts?.updated).toBeGreaterThanOrEqual(2);
    expect(counts?.hot).toBe(counts?.updated);
  });

  it("job_deadline follows the jobs with a timeout: written on insert, moved by an UPDATE of the timeout", async () => {
    const deadline = async (jobId: string) =>
      (
        await t.db.execute<{ secs: number | null }>(sql`
          select (select extract(epoch from d.deadline - j.created_at)::int from job_deadline d where d.job_id = j.job_id) as secs
          from job j where j.job_id = ${jobId}`)
      ).rows[0]?.secs;
    const timed = await JobRepo.create(t.db, { taskName: "t", sourceType: "api", timeoutSecs: 90 });
    const untimed = await JobRepo.create(t.db, { taskName: "t", sourceType: "api" });
    expect([await deadline(timed), await deadline(untimed)]).toEqual([90, null]);
    await t.db.execute(sql`update job set timeout_secs = 120 where job_id = ${timed}`);
    await t.db.execute(sql`update job set timeout_secs = 30 where job_id = ${untimed}`);
    expect([await deadline(timed), await deadline(untimed)]).toEqual([120, 30]);
    await t.db.execute(sql`update job set timeout_secs = null where job_id = ${timed}`);
    expect(await deadline(timed)).toBeNull();
    // Deleting a job deletes its deadline.
    await t.db.execute(sql`delete from job where job_id = ${untimed}`);
    expect(
      (await t.db.execute<{ n: number }>(sql`select count(*)::int as n from job_deadline where job_id = ${untimed}`))
        .rows[0]?.n,
    ).toBe(0);
  });
});
