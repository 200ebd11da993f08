import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, inject, it } from "vitest";
import { createPool, InvalidInputError, JobRepo, JobStepRepo } from "../src/index.js";
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
  });
});
