import { randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
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
import { errorOf } from "./helpers.js";

const t = useTestDb();

/** What Postgres (through Drizzle) throws for `statement`, translated at the boundary. */
async function translated(statement: ReturnType<typeof sql>) {
  return translateError(await errorOf(() => t.db.execute(statement)));
}

describe("translateError", () => {
  it("turns constraint violations into typed errors that keep the driver error as cause", async () => {
    const check = await translated(
      sql`insert into job (job_id, task_name, source_type) values (gen_random_uuid(), 't', 'cron')`,
    );
    expect(check).toBeInstanceOf(CheckViolationError);
    expect(check).toMatchObject({ code: PG.CHECK_VIOLATION, constraint: "job_source_type_check" });
    expect((check.cause as { cause?: { code?: string } }).cause?.code).toBe(PG.CHECK_VIOLATION);

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
