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

describe("write amplification: what the hot path writes", () => {
  it("the definitions have no column the claim or the report changes", async () => {
    const { rows } = await t.db.execute<{ table: string; column: string }>(sql`
      select c.relname as table, a.attname as column
      from pg_attribute a join pg_class c on c.oid = a.attrelid
      where c.relname in ('job', 'job_step') and c.relnamespace = current_schema()::regnamespace
        and a.attnum > 0 and not a.attisdropped
      order by 1, 2`);
    const state = ["status", "worker_id", "started_at", "completed_at", "attempts", "output", "steps_unfinished"];
    expect(rows.filter((r) => state.includes(r.column))).toEqual([]);
    expect(rows.length).toBeGreaterThan(10);
  });

  it("a one-step job's life writes one live row (claimed: updated, reported: deleted) and appends two results", async () => {
    const w = await registerWorker(t.db);
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "t", sourceType: "api", timeoutSecs: 60 }, [
      { stepName: "a", actionName: "x", actionType: "shell" },
    ]);
    const counts = await t.db.transaction(async (tx) => {
      // The backend's counters (pending ones of earlier transactions included:
      // they are flushed when the session idles), read before and after.
      const read = async () => {
        const r = await tx.execute<{ table: string; ins: number; upd: number; del: number }>(sql`
          select t.name as table, pg_stat_get_xact_tuples_inserted(t.name::regclass)::int as ins,
                 pg_stat_get_xact_tuples_updated(t.name::regclass)::int as upd,
                 pg_stat_get_xact_tuples_deleted(t.name::regclass)::int as del
          from unnest(array['job', 'job_step', 'job_live', 'job_result', 'step_live', 'step_result']) as t(name)
          order by 1`);
        return r.rows;
      };
      const before = await read();
      const [step] = await JobStepRepo.claimReadySteps(tx, ["shell"], w, 1);
      if (!step) throw new Error("expected a ready step");
      await JobStepRepo.complete(tx, { jobId: step.jobId, stepName: "a", workerId: w, attempt: 1 });
      const after = await read();
      return Object.fromEntries(
        after.map((x, i) => {
          const b = before[i] as (typeof before)[number];
          return [x.table, [x.ins - b.ins, x.upd - b.upd, x.del - b.del]];
        }),
      );
    });
    // [inserted, updated, deleted] in the claim + report transaction.
    expect(counts).toEqual({
      job: [0, 0, 0],
      job_live: [0, 0, 0],
      job_result: [1, 0, 0],
      job_step: [0, 0, 0],
      step_live: [0, 1, 1],
      step_result: [1, 0, 0],
    });
    expect((await JobRepo.get(t.db, jobId))?.status).toBe("completed");
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
