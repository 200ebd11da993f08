import { randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { translateErrors } from "../src/db.js";
import {
  CheckViolationError,
  ConnectionError,
  DatabaseError,
  ForeignKeyViolationError,
  InvalidInputError,
  PG,
  translateError,
  UniqueViolationError,
} from "../src/index.js";
import { ADVANCE, runStatement } from "../src/internal.js";
import { errorOf } from "./helpers.js";

const t = useTestDb();

/** What Postgres (through Drizzle) throws for `statement`, translated at the boundary. */
async function translated(statement: ReturnType<typeof sql>) {
  return translateError(await errorOf(() => t.db.execute(statement)));
}

describe("translateError", () => {
  it("names the prepared statement that failed, never its SQL text or values", async () => {
    const error = await errorOf(() =>
      translateErrors(t.db, () => runStatement(t.db, ADVANCE, { jobId: "not-a-uuid-secret" })),
    );
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ code: "22P02", statement: "stroem_advance" });
    expect(`${error.message} ${String(error.cause)} ${JSON.stringify(error)}`).not.toMatch(
      /select \* from stroem_advance/i,
    );
    // A query built with Drizzle has no name; its wrapper's text is dropped all the same.
    const built = translateError(await errorOf(() => t.db.execute(sql`select 1/0 as secret_column`)));
    expect(built).toMatchObject({ name: "DatabaseError", code: "22012", statement: undefined });
    expect(`${built.message} ${String(built.cause)}`).not.toMatch(/secret_column|Failed query/);
  });

  it("turns constraint violations into typed errors that keep the driver error as cause", async () => {
    const check = await translated(
      sql`insert into job (job_id, task_name, source_type) values (gen_random_uuid(), 't', 'cron')`,
    );
    expect(check).toBeInstanceOf(CheckViolationError);
    expect(check).toMatchObject({ code: PG.CHECK_VIOLATION, constraint: "job_source_type_check" });
    // The cause is the driver's error, not Drizzle's wrapper: no SQL text, no values (logs name the statement).
    expect((check.cause as { code?: string }).code).toBe(PG.CHECK_VIOLATION);
    expect(`${check.message} ${String(check.cause)}`).not.toMatch(/insert into|gen_random_uuid/i);

    const fk = await translated(
      sql`insert into job_step (job_id, step_name, action_name) values (${randomUUID()}, 's', 'a')`,
    );
    expect(fk).toBeInstanceOf(ForeignKeyViolationError);
    expect((fk as ForeignKeyViolationError).detail).toMatch(/is not present in table "job"/);

    const id = randomUUID();
    await t.db.execute(sql`insert into worker (worker_id, name) values (${id}, 'w')`);
    const unique = await translated(sql`insert into worker (worker_id, name) values (${id}, 'w')`);
    expect(unique).toBeInstanceOf(UniqueViolationError);
    expect(unique).toMatchObject({ constraint: "worker_pkey" });
  });

  it("keeps other SQLSTATEs on a DatabaseError", async () => {
    const error = await translated(sql`select 1/0`);
    expect(error).toBeInstanceOf(DatabaseError);
    expect((error as DatabaseError).code).toBe("22012");
  });

  it("passes typed errors and non-database errors through unchanged", () => {
    const ours = new InvalidInputError("x", "bad");
    expect(translateError(ours)).toBe(ours);
    const bug = new TypeError("undefined is not a function");
    expect(translateError(bug)).toBe(bug);
  });

  it("recognises socket errors as connection errors", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 10.0.0.9:5432"), { code: "ECONNREFUSED" });
    const error = translateError(new Error("wrapped", { cause: refused }), { host: "10.0.0.9", port: 5432 });
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error.message).toContain("10.0.0.9:5432");
  });
});
