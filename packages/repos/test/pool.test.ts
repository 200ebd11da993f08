import net from "node:net";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import pg from "pg";
import { describe, expect, it } from "vitest";
import {
  ConnectionError,
  createPool,
  DatabaseError,
  InvalidInputError,
  JobRepo,
  PG,
  ping,
  runMigrations,
  translateError,
} from "../src/index.js";
import { errorOf, waitFor } from "./helpers.js";

const t = useTestDb();

describe("createPool", () => {
  it("returns Drizzle over a pg.Pool with the given options", async () => {
    const db = createPool(t.url, {
      max: 3,
      applicationName: "stroem-pool-test",
      statementTimeoutMs: 1234,
      pooler: t.pooler,
    });
    try {
      expect(db.$client).toBeInstanceOf(pg.Pool);
      expect(db.$client.options.max).toBe(3);
      const res = await db.execute<{ app: string; timeout: string }>(
        sql`select current_setting('application_name') as app, current_setting('statement_timeout') as timeout`,
      );
      // Through a transaction pooler the timeout is the client's (no startup parameter, no SET):
      // the server keeps its own default.
      expect(res.rows[0]).toEqual({ app: "stroem-pool-test", timeout: t.pooler ? "0" : "1234ms" });
      // runMigrations is re-exported, and a no-op on a migrated database.
      expect((await runMigrations(db)).applied).toEqual([]);
    } finally {
      await db.$client.end();
    }
  });

  it("rejects what is not a Postgres URL, and bad options", () => {
    expect(() => createPool("not a url")).toThrow(InvalidInputError);
    expect(() => createPool("mysql://localhost/db")).toThrow(/expected postgres:\/\//);
    expect(() => createPool(t.url, { max: 0 })).toThrow(InvalidInputError);
    expect(() => createPool(t.url, { statementTimeoutMs: -1 })).toThrow(InvalidInputError);
    expect(() => createPool(t.url, { pooler: "session" as "transaction" })).toThrow(/options.pooler/);
    expect(() => createPool(undefined as unknown as string)).toThrow(InvalidInputError);
  });

  it("a server that accepts and closes is a ConnectionError with the driver's words, not the failed query's", async () => {
    const server = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    const db = createPool(`postgres://u:p@127.0.0.1:${port}/x`, { connectionTimeoutMs: 5000 });
    try {
      const error = await errorOf(() => ping(db));
      expect(error).toBeInstanceOf(ConnectionError);
      expect(error.message).toMatch(
        new RegExp(`^cannot reach PostgreSQL at 127\\.0\\.0\\.1:${port}: Connection terminated`),
      );
      expect(error.message).not.toContain("Failed query");
      // The cause is the driver's error: no SQL text to leak into a log.
      expect(String(error.cause)).not.toMatch(/select 1|Failed query/);
    } finally {
      await db.$client.end();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("an unreachable server is a ConnectionError naming host and port, not a hang", async () => {
    const db = createPool("postgres://u:p@127.0.0.1:1/x", { connectionTimeoutMs: 2000 });
    try {
      const error = await errorOf(() => JobRepo.get(db, "00000000-0000-4000-8000-000000000000"));
      expect(error).toBeInstanceOf(ConnectionError);
      expect(error.message).toContain("127.0.0.1:1");
      expect(error).toMatchObject({ host: "127.0.0.1", port: 1 });
      expect(error.cause).toBeDefined();
      expect(await errorOf(() => ping(db))).toBeInstanceOf(ConnectionError);
    } finally {
      await db.$client.end();
    }
  });

  it("a wrong password or database is a ConnectionError too", async () => {
    const u = new URL(t.url);
    u.pathname = "/no_such_database";
    const db = createPool(u.toString(), { pooler: t.pooler });
    try {
      expect(await errorOf(() => ping(db))).toBeInstanceOf(ConnectionError);
    } finally {
      await db.$client.end();
    }
  });

  it("the statement timeout cancels a slow statement with a typed error", async () => {
    const db = createPool(t.url, { statementTimeoutMs: 50, pooler: t.pooler });
    try {
      const error = await errorOf(() =>
        ping(db).then(() =>
          db.execute(sql`select pg_sleep(2)`).catch((e) => {
            throw translateError(e);
          }),
        ),
      );
      expect(error).toBeInstanceOf(DatabaseError);
      expect((error as DatabaseError).code).toBe(PG.QUERY_CANCELED);
    } finally {
      await db.$client.end();
    }
  });

  it("a connection killed while checked out fails its next query with ConnectionError, not the process", async () => {
    const seen: Error[] = [];
    const db = createPool(t.url, { max: 1, onConnectionError: (e) => seen.push(e), pooler: t.pooler });
    try {
      const error = await errorOf(() =>
        db.transaction(async (tx) => {
          const [{ pid } = { pid: 0 }] = (await tx.execute<{ pid: number }>(sql`select pg_backend_pid() as pid`)).rows;
          await t.db.execute(sql`select pg_terminate_backend(${pid})`);
          // The backend is gone while this transaction sits idle on it.
          await waitFor(async () => {
            const rows = await t.db.execute(sql`select 1 from pg_stat_activity where pid = ${pid}`);
            return rows.rows.length === 0;
          });
          await JobRepo.list(tx, { limit: 1, offset: 0 });
        }),
      );
      // What escapes the caller's own transaction is Drizzle's (its ROLLBACK failed too);
      // translateError, exported for such callers, still names it for what it is.
      expect(translateError(error)).toBeInstanceOf(ConnectionError);
      // Directly, the socket dies with the backend. Through a pooler the client's socket is
      // the pooler's, which reports the lost server as an error result and hangs up.
      if (!t.pooler) expect(seen.length).toBeGreaterThan(0);
      await ping(db); // the pool replaced the dead connection
    } finally {
      await db.$client.end();
    }
  });

  // Through a transaction pooler pg_backend_pid() names a server connection shared by every
  // client: the killer's own query may run on it; and an idle one's loss is the pooler's business.
  it.skipIf(t.pooler)("a killed backend surfaces as a typed error, and the pool recovers", async () => {
    const db = createPool(t.url, { max: 1, pooler: t.pooler });
    try {
      await ping(db);
      const [{ pid } = { pid: 0 }] = (await db.execute<{ pid: number }>(sql`select pg_backend_pid() as pid`)).rows;
      await t.db.execute(sql`select pg_terminate_backend(${pid})`);
      // The dead idle connection is dropped by the pool; the next query works.
      const deadline = Date.now() + 5000;
      for (;;) {
        try {
          await ping(db);
          break;
        } catch (error) {
          expect(error).toBeInstanceOf(ConnectionError);
          if (Date.now() > deadline) throw error;
        }
      }
    } finally {
      await db.$client.end();
    }
  });
});

describe('createPool(url, { pooler: "transaction" })', () => {
  // Runs on whatever the suite runs on; the CI leg runs it through PgBouncer in transaction mode.
  const open = () => createPool(t.url, { max: 1, statementTimeoutMs: 300, pooler: "transaction" });
  const canceled = (error: Error) => {
    const typed = translateError(error);
    expect(typed).toBeInstanceOf(DatabaseError);
    expect((typed as DatabaseError).code).toBe(PG.QUERY_CANCELED);
  };

  it("sends no statement_timeout, yet a statement that runs too long fails with 57014, and the connection still works", async () => {
    const db = open();
    try {
      const setting = await db.execute<{ timeout: string }>(
        sql`select current_setting('statement_timeout') as timeout`,
      );
      expect(setting.rows[0]?.timeout).not.toBe("300ms");
      const started = Date.now();
      canceled(await errorOf(() => db.execute(sql`select pg_sleep(5)`)));
      // Cancelled on the server, not merely abandoned: the answer came long before the sleep ended.
      expect(Date.now() - started).toBeLessThan(4000);
      // One connection (max 1): the same one answers the next statements.
      await ping(db);
      expect((await db.execute<{ one: number }>(sql`select 1 as one`)).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.$client.end();
    }
  });

  it("inside a transaction: the slow statement fails, the transaction rolls back, the pool goes on", async () => {
    const db = open();
    try {
      const error = await errorOf(() =>
        db.transaction(async (tx) => {
          await tx.execute(sql`create temporary table t_cancel (x int) on commit drop`);
          await tx.execute(sql`select pg_sleep(5)`);
        }),
      );
      canceled(error);
      await ping(db);
      // Statements shorter than the timeout are untouched, one after another on the connection.
      for (let i = 0; i < 3; i++) await db.execute(sql`select pg_sleep(0.1)`);
    } finally {
      await db.$client.end();
    }
  });

  it("a timeout of 0 disables it", async () => {
    const db = createPool(t.url, { max: 1, statementTimeoutMs: 0, pooler: "transaction" });
    try {
      await db.execute(sql`select pg_sleep(0.4)`);
    } finally {
      await db.$client.end();
    }
  });
});
