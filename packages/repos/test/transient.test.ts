import net from "node:net";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import {
  ConnectionError,
  createPool,
  type Database,
  InvalidInputError,
  isRolledBack,
  isTransient,
  JobRepo,
  JobStepRepo,
  ping,
  retryTransient,
  StepOwnershipError,
  translateError,
} from "../src/index.js";
import { errorOf, registerWorker, waitFor } from "./helpers.js";

const t = useTestDb();
const opened: Database[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.$client.end()));
});
const open = (options: Parameters<typeof createPool>[1] = {}) => {
  const db = createPool(t.url, { pooler: t.pooler, ...options });
  opened.push(db);
  return db;
};

/** A real Postgres error with this SQLSTATE, raised by the server. */
const raised = (code: string) =>
  errorOf(() => t.db.$client.query(`do $$ begin raise exception 'x' using errcode = '${code}'; end $$`));

/** A closed port on this machine. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** A wrong password and a missing database: ConnectionErrors, not transient. */
async function refusedLogins() {
  const u = new URL(t.url);
  u.password = "wrong";
  const badPassword = createPool(u.toString());
  const v = new URL(t.url);
  v.pathname = "/stroem_no_such_database";
  const missing = createPool(v.toString());
  try {
    for (const db of [badPassword, missing]) {
      const error = await errorOf(() => ping(db));
      expect(error).toBeInstanceOf(ConnectionError);
      expect(isTransient(error)).toBe(false);
    }
  } finally {
    await Promise.all([badPassword.$client.end(), missing.$client.end()]);
  }
}

describe("isTransient", () => {
  it("is true for the server going away or coming back, lost connections, deadlocks, serialization failures", async () => {
    for (const code of ["57P01", "57P02", "57P03", "08006", "08001", "40P01", "40001"]) {
      const error = await raised(code);
      expect((error as { code?: string }).code).toBe(code);
      expect([code, isTransient(error), isTransient(translateError(error))]).toEqual([code, true, true]);
    }
    // A refused connection (nothing listens), through createPool: a typed ConnectionError.
    const refused = createPool(`postgres://u:p@127.0.0.1:${await closedPort()}/x`, { connectionTimeoutMs: 5000 });
    try {
      const error = await errorOf(() => ping(refused));
      expect(error).toBeInstanceOf(ConnectionError);
      expect([isTransient(error), isRolledBack(error)]).toEqual([true, true]);
    } finally {
      await refused.$client.end();
    }
    // A server that accepts and hangs up: "Connection terminated unexpectedly".
    const server = net.createServer((socket) => socket.destroy());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const hangsUp = createPool(`postgres://u:p@127.0.0.1:${(server.address() as net.AddressInfo).port}/x`);
    try {
      const error = await errorOf(() => ping(hangsUp));
      expect(error.message).toMatch(/Connection terminated/);
      expect([isTransient(error), isRolledBack(error)]).toEqual([true, false]);
    } finally {
      await hangsUp.$client.end();
      await new Promise((r) => server.close(r));
    }
  });

  it.skipIf(t.pooler)("a backend terminated mid-statement (pg_terminate_backend) is 57P01: transient", async () => {
    const client = new pg.Client({ connectionString: t.url });
    client.on("error", () => {});
    await client.connect();
    try {
      const pid = (await client.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]?.pid;
      const sleeping = errorOf(() => client.query("select pg_sleep(60)"));
      await waitFor(async () => {
        const r = await t.db.execute(sql`select 1 from pg_stat_activity where pid = ${pid} and wait_event = 'PgSleep'`);
        return r.rows.length > 0;
      });
      await t.db.execute(sql`select pg_terminate_backend(${pid})`);
      const error = await sleeping;
      expect((error as { code?: string }).code).toBe("57P01");
      expect([isTransient(error), isRolledBack(error)]).toEqual([true, false]);
    } finally {
      await client.end().catch(() => {});
    }
  });

  it.skipIf(t.pooler)("a real deadlock (40P01) is transient and proves the rollback", async () => {
    const a = open({ max: 1 });
    const b = open({ max: 1 });
    const outcomes = await Promise.allSettled([
      a.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(9001)`);
        await waitFor(
          async () =>
            (await t.db.execute(sql`select 1 from pg_locks where locktype = 'advisory' and objid = 9002 and granted`))
              .rows.length > 0,
        );
        await tx.execute(sql`select pg_advisory_xact_lock(9002)`);
      }),
      b.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(9002)`);
        await waitFor(
          async () =>
            (
              await t.db.execute(
                sql`select 1 from pg_locks where locktype = 'advisory' and objid = 9002 and not granted`,
              )
            ).rows.length > 0,
        );
        await tx.execute(sql`select pg_advisory_xact_lock(9001)`);
      }),
    ]);
    const rejected = outcomes.filter((o) => o.status === "rejected").map((o) => (o as PromiseRejectedResult).reason);
    expect(rejected).toHaveLength(1);
    expect([isTransient(rejected[0]), isRolledBack(rejected[0])]).toEqual([true, true]);
  });

  it("is false for what retrying cannot fix", async () => {
    for (const code of ["23505", "23514", "57014", "42P01", "22P02", "25P03"]) {
      expect([code, isTransient(await raised(code))]).toEqual([code, false]);
    }
    // A wrong password, a missing database: connection errors, but not transient (directly:
    // the CI's pooler trusts any password).
    if (!t.pooler) await refusedLogins();
    const jobId = await JobRepo.create(t.db, { taskName: "x", sourceType: "api" });
    const refused = await errorOf(() =>
      JobStepRepo.complete(t.db, { jobId, stepName: "nope", workerId: crypto.randomUUID(), attempt: 1 }),
    );
    for (const e of [
      refused,
      new InvalidInputError("x", "bad"),
      new StepOwnershipError("j", "s", {}, { workerId: null, attempt: 1 }),
      new Error("boom"),
      "a string",
      undefined,
      null,
    ]) {
      expect(isTransient(e)).toBe(false);
    }
  });
});

describe("retryTransient and the reports", () => {
  it("retries a transient failure a bounded number of times, and never a permanent one or inside a transaction", async () => {
    const policy = { tries: 3, baseDelayMs: 1, maxDelayMs: 2 };
    /** A call that counts itself and throws `error`. */
    const failing = (error: unknown) => async () => {
      calls++;
      throw error;
    };
    const transient = await raised("40001");
    let calls = 0;
    expect(await retryTransient(t.db, true, async () => (++calls < 3 ? Promise.reject(transient) : "ok"), policy)).toBe(
      "ok",
    );
    expect(calls).toBe(3);
    calls = 0;
    expect(await errorOf(() => retryTransient(t.db, true, failing(transient), policy))).toBe(transient);
    expect(calls).toBe(3);
    calls = 0;
    const permanent = await raised("23505");
    await errorOf(() => retryTransient(t.db, true, failing(permanent), policy));
    expect(calls).toBe(1);
    // Not idempotent: a lost connection may have committed: not retried; a rollback is.
    const lost = await raised("57P01");
    calls = 0;
    await errorOf(() => retryTransient(t.db, false, failing(lost), policy));
    expect(calls).toBe(1);
    calls = 0;
    await errorOf(() => retryTransient(t.db, false, failing(transient), policy));
    expect(calls).toBe(3);
    calls = 0;
    await errorOf(() => t.db.transaction((tx) => retryTransient(tx, true, failing(transient), policy)));
    expect(calls).toBe(1);
  });

  it.skipIf(t.pooler)(
    "complete() whose backend is killed mid-statement retries by itself and is recorded once",
    async () => {
      const jobId = await JobRepo.createWithSteps(t.db, { taskName: "x", sourceType: "api" }, [
        { stepName: "a", actionName: "x", actionType: "shell" },
      ]);
      const w = await registerWorker(t.db, ["shell"]);
      const claimed = await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
      const reporter = open({ max: 1, applicationName: "stroem-retry-test" });
      const holder = t.openPool({ max: 1 });
      const blocked = async () =>
        (
          await t.db.execute<{ pid: number }>(
            sql`select pid from pg_stat_activity where application_name = 'stroem-retry-test' and wait_event_type = 'Lock'`,
          )
        ).rows.map((r) => r.pid);
      try {
        let report: Promise<unknown> | undefined;
        await holder.transaction(async (tx) => {
          // The job row is held: the report waits for it; its backend is then killed (57P01).
          await tx.execute(sql`select * from stroem_lock_job(${jobId})`);
          report = JobStepRepo.complete(
            reporter,
            {
              jobId,
              stepName: "a",
              workerId: w,
              attempt: claimed?.attempts as number,
            },
            { n: 1 },
          );
          report.catch(() => {});
          let first: number[] = [];
          await waitFor(async () => {
            first = await blocked();
            return first.length === 1;
          }, 20_000);
          await t.db.execute(sql`select pg_terminate_backend(${first[0]})`);
          // The retry comes back on a new connection and waits again.
          await waitFor(async () => {
            const now = await blocked();
            return now.length === 1 && now[0] !== first[0];
          }, 20_000);
        });
        expect(await report).toMatchObject({ repeated: false, jobStatus: "completed" });
        const [a] = await JobStepRepo.getStepsForJob(t.db, jobId);
        expect(a).toMatchObject({ status: "completed", output: { n: 1 }, attempts: 1 });
      } finally {
        await holder.$client.end();
      }
    },
  );

  it.skipIf(t.pooler)(
    "an unguarded report is not retried after a lost connection (a repeat would be refused)",
    async () => {
      const jobId = await JobRepo.createWithSteps(t.db, { taskName: "x", sourceType: "api" }, [
        { stepName: "a", actionName: "x", actionType: "shell" },
      ]);
      const reporter = open({ max: 1, applicationName: "stroem-retry-test2" });
      const holder = t.openPool({ max: 1 });
      try {
        let report: Promise<unknown> | undefined;
        await holder.transaction(async (tx) => {
          await tx.execute(sql`select * from stroem_lock_job(${jobId})`);
          report = JobStepRepo.complete(reporter, { jobId, stepName: "a" }, { n: 1 });
          report.catch(() => {});
          let pid: number | undefined;
          await waitFor(async () => {
            pid = (
              await t.db.execute<{ pid: number }>(
                sql`select pid from pg_stat_activity where application_name = 'stroem-retry-test2' and wait_event_type = 'Lock'`,
              )
            ).rows[0]?.pid;
            return pid !== undefined;
          }, 20_000);
          await t.db.execute(sql`select pg_terminate_backend(${pid})`);
          expect(await errorOf(() => report as Promise<unknown>)).toBeInstanceOf(ConnectionError);
        });
        expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]?.status).toBe("ready");
      } finally {
        await holder.$client.end();
      }
    },
  );
});

describe("idleInTransactionTimeoutMs", () => {
  it("is set on every transaction, directly or through a transaction pooler", async () => {
    const db = open({ max: 1, idleInTransactionTimeoutMs: 4321 });
    const inTx = await db.transaction(
      async (tx) =>
        (await tx.execute<{ v: string }>(sql`select current_setting('idle_in_transaction_session_timeout') as v`))
          .rows[0]?.v,
    );
    expect(inTx).toBe("4321ms");
    // Outside a transaction: the startup parameter directly; the server's own setting through a pooler.
    const outside = (
      await db.execute<{ v: string }>(sql`select current_setting('idle_in_transaction_session_timeout') as v`)
    ).rows[0]?.v;
    expect(outside).toBe(t.pooler ? "0" : "4321ms");
    expect(() => createPool(t.url, { idleInTransactionTimeoutMs: -1 })).toThrow(InvalidInputError);
  });

  it("a transaction left idle loses its connection and its locks; the pool carries on", async () => {
    const seen: Error[] = [];
    const db = open({ max: 1, idleInTransactionTimeoutMs: 200, onConnectionError: (e) => seen.push(e) });
    const jobId = await JobRepo.create(t.db, { taskName: "x", sourceType: "api" });
    const error = await errorOf(() =>
      db.transaction(async (tx) => {
        await tx.execute(sql`select * from stroem_lock_job(${jobId})`);
        // Hung: the row is free again once the server ends the idle transaction.
        await waitFor(async () => {
          const r = await t.db.transaction(async (other) => {
            await other.execute(sql`set local lock_timeout = '50ms'`);
            try {
              await other.execute(sql`select * from stroem_lock_job(${jobId})`);
              return true;
            } catch {
              return false;
            }
          });
          return r;
        }, 30_000);
        await tx.execute(sql`select 1`);
      }),
    );
    expect(isTransient(translateError(error)) || /terminat|idle-in-transaction/i.test(String(error))).toBe(true);
    await ping(db);
  });
});
