import { worker } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createPool,
  type Database,
  InvalidInputError,
  isTransient,
  JobRepo,
  JobStepRepo,
  MAINTENANCE_LOCK_CLASS,
  type Maintenance,
  type MaintenanceSweep,
  runSweep,
  type SweepEvent,
  startMaintenance,
  transaction,
  WorkerRepo,
} from "../src/index.js";
import { deferred, errorOf, registerWorker, waitFor } from "./helpers.js";

const t = useTestDb();
const opened: Database[] = [];
const running: Maintenance[] = [];
const open = () => {
  const db = createPool(t.url, { max: 4, pooler: t.pooler });
  opened.push(db);
  return db;
};

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await t.db.execute(sql`delete from worker`);
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((m) => m.stop()));
  await Promise.all(opened.splice(0).map((db) => db.$client.end()));
});

const quiet = { rescueEveryMs: 0, timeoutsEveryMs: 0, inactiveEveryMs: 0 };

describe("startMaintenance", () => {
  it("rescues dead workers' steps, times out steps, marks silent workers inactive, each reported once done", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "m", sourceType: "api" }, [
      { stepName: "dead", actionName: "x", actionType: "shell" },
      { stepName: "slow", actionName: "x", actionType: "docker", timeoutSecs: 1 },
    ]);
    const dead = await registerWorker(t.db, ["shell"]);
    const alive = await registerWorker(t.db, ["docker"]);
    await JobStepRepo.claimReadyStep(t.db, ["shell"], dead);
    await JobStepRepo.claimReadyStep(t.db, ["docker"], alive);
    await t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, dead));
    await t.db.execute(sql`update step_live set started_at = now() - interval '1 minute' where step_name = 'slow'`);

    const events: SweepEvent[] = [];
    const errors: unknown[] = [];
    const db = open();
    running.push(
      startMaintenance(db, {
        staleAfterMs: 10_000,
        rescueEveryMs: 50,
        timeoutsEveryMs: 50,
        inactiveAfterMs: 20_000,
        inactiveEveryMs: 50,
        onSweep: (e) => events.push(e),
        onError: (e) => errors.push(e),
      }),
    );
    await waitFor(
      async () => ["rescue", "timeouts", "inactive"].every((n) => events.some((e) => e.sweep === n && e.changed > 0)),
      30_000,
    );
    await (running.pop() as Maintenance).stop();

    const steps = await JobStepRepo.getStepsForJob(t.db, jobId);
    expect(steps.map((s) => [s.stepName, s.status, s.rescues])).toEqual([
      ["dead", "ready", 1],
      ["slow", "failed", 0],
    ]);
    expect((await WorkerRepo.get(t.db, dead))?.status).toBe("inactive");
    expect((await WorkerRepo.get(t.db, alive))?.status).toBe("active");
    // Each change is reported by exactly one run.
    const did = (n: string) => events.filter((e) => e.sweep === n && e.changed > 0);
    expect(did("rescue").map((e) => e.result)).toEqual([
      { requeued: [{ jobId, stepName: "dead", attempts: 1, workerId: dead }], failed: [], cancelled: [] },
    ]);
    expect(did("timeouts")).toHaveLength(1);
    expect(did("inactive").map((e) => e.result)).toEqual([{ workers: [dead] }]);
    expect(errors).toEqual([]);
  });

  it("with purge, runs the retention purge: old finished jobs and audit events go, nothing else", async () => {
    const flow = [{ stepName: "a", actionName: "x", actionType: "shell" as const }];
    const old = await JobRepo.createWithSteps(t.db, { taskName: "old", sourceType: "api" }, flow);
    const recent = await JobRepo.createWithSteps(t.db, { taskName: "recent", sourceType: "api" }, flow);
    const open_ = await JobRepo.createWithSteps(t.db, { taskName: "open", sourceType: "api" }, flow);
    await JobStepRepo.complete(t.db, { jobId: old, stepName: "a" });
    await JobStepRepo.complete(t.db, { jobId: recent, stepName: "a" });
    await t.db.execute(sql`update job set created_at = now() - interval '3 days' where job_id in (${old}, ${open_})`);
    await t.db.execute(sql`update job_result set completed_at = now() - interval '2 days' where job_id = ${old}`);
    const events: SweepEvent[] = [];
    const errors: unknown[] = [];
    running.push(
      startMaintenance(open(), {
        ...quiet,
        purge: { olderThanMs: 86_400_000, batchSize: 1 },
        purgeEveryMs: 50,
        onSweep: (e) => events.push(e),
        onError: (e) => errors.push(e),
      }),
    );
    await waitFor(async () => events.some((e) => e.sweep === "purge" && e.changed > 0), 30_000);
    await (running.pop() as Maintenance).stop();
    expect(events.find((e) => e.sweep === "purge" && e.changed > 0)?.result).toMatchObject({ jobs: 1, steps: 1 });
    const left = await t.db.execute<{ task_name: string }>(sql`select task_name from job order by task_name`);
    expect(left.rows.map((r) => r.task_name)).toEqual(["open", "recent"]);
    expect(errors).toEqual([]);
    // Bad purge options are refused before anything runs.
    const e = await errorOf(async () => startMaintenance(open(), { ...quiet, purge: { olderThanMs: -1 } }));
    expect(e).toBeInstanceOf(InvalidInputError);
  });

  it("a sweep whose lock another process holds is skipped (pg_try_advisory_xact_lock), then runs", async () => {
    const sweep: MaintenanceSweep = {
      name: "probe",
      lockId: 42,
      intervalMs: 1000,
      run: async () => ({ changed: 1, result: "ran" }),
    };
    const other = t.openPool({ max: 1 });
    try {
      await other.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(${MAINTENANCE_LOCK_CLASS}::int, 42)`);
        expect(await runSweep(t.db, sweep, 1000)).toMatchObject({ sweep: "probe", skipped: true, changed: 0 });
      });
    } finally {
      await other.$client.end();
    }
    expect(await runSweep(t.db, sweep, 1000)).toMatchObject({ skipped: false, changed: 1, result: "ran" });
  });

  it("errors (a statement timeout too) go to onError and the loop carries on", async () => {
    let runs = 0;
    const errors: { error: unknown; sweep: string }[] = [];
    const flaky: MaintenanceSweep = {
      name: "flaky",
      lockId: 43,
      intervalMs: 20,
      async run(tx) {
        runs++;
        if (runs === 1) throw new Error("first run fails");
        if (runs === 2) await tx.execute(sql`select pg_sleep(10)`); // longer than the statement timeout
        return { changed: 0, result: runs };
      },
    };
    const db = open();
    const events: SweepEvent[] = [];
    running.push(
      startMaintenance(db, {
        ...quiet,
        statementTimeoutMs: 200,
        sweeps: [flaky],
        onSweep: (e) => events.push(e),
        onError: (error, sweep) => errors.push({ error, sweep }),
      }),
    );
    await waitFor(async () => events.length >= 2, 30_000);
    expect(errors.map((e) => e.sweep)).toEqual(["flaky", "flaky"]);
    expect(errors[0]?.error).toMatchObject({ message: "first run fails" });
    const timedOut = errors[1]?.error as Error & { cause?: unknown };
    expect(timedOut).toBeInstanceOf(Error);
    expect(`${timedOut.message} ${String(timedOut.cause)}`).toMatch(/statement timeout/);
    expect(events[0]).toMatchObject({ sweep: "flaky", skipped: false, result: 3 });
  });

  it("stop() waits for the sweep in flight, and nothing runs after", async () => {
    const entered = deferred();
    const release = deferred();
    let runs = 0;
    const slow: MaintenanceSweep = {
      name: "slow",
      lockId: 44,
      intervalMs: 10,
      async run() {
        runs++;
        entered.resolve();
        await release.promise;
        return { changed: 0, result: undefined };
      },
    };
    const db = open();
    const m = startMaintenance(db, { ...quiet, sweeps: [slow] });
    await entered.promise;
    let stopped = false;
    const stopping = m.stop().then(() => {
      stopped = true;
    });
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(false);
    release.resolve();
    await stopping;
    expect(runs).toBe(1);
  });

  it("refuses bad options before running anything", async () => {
    const db = open();
    const sweep = (over: Partial<MaintenanceSweep>): MaintenanceSweep => ({
      name: "x",
      lockId: 50,
      intervalMs: 10,
      run: async () => ({ changed: 0, result: undefined }),
      ...over,
    });
    for (const options of [
      { staleAfterMs: 0 },
      { rescueEveryMs: -1 },
      { statementTimeoutMs: 0 },
      { inactiveAfterMs: 1.5 },
      { ...quiet, sweeps: [sweep({ intervalMs: 0 })] },
      { ...quiet, sweeps: [sweep({}), sweep({ name: "y" })] },
      { sweeps: [sweep({ lockId: 1 })] },
    ]) {
      expect(await errorOf(async () => startMaintenance(db, options))).toBeInstanceOf(InvalidInputError);
    }
  });
});

describe("transaction (what maintenance runs its sweeps in)", () => {
  /** A client whose socket dies just as the next BEGIN is sent: a connection lost while idle in the pool. */
  const dyingPool = () => {
    let armed = true;
    class Dying extends pg.Client {
      // biome-ignore lint/suspicious/noExplicitAny: wraps every overload of query()
      override query(...args: any[]): any {
        const text = typeof args[0] === "string" ? args[0] : args[0]?.text;
        if (armed && text === "begin") {
          armed = false;
          (this as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
        }
        // biome-ignore lint/suspicious/noExplicitAny: as above
        return (super.query as any)(...args);
      }
    }
    const pool = new pg.Pool({ connectionString: t.url, max: 1, connectionTimeoutMillis: 2000, Client: Dying });
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
    return drizzle({ client: pool });
  };

  it.skipIf(t.pooler)(
    "a BEGIN on a dead connection fails, and the connection is not leaked (drizzle's transaction leaks it)",
    async () => {
      const db = dyingPool();
      try {
        const first = await errorOf(() => transaction(db, async (tx) => tx.execute(sql`select 1`)));
        expect(isTransient(first)).toBe(true);
        // The pool of one is not exhausted: the next transactions get a fresh connection.
        for (let i = 0; i < 3; i++) {
          expect((await transaction(db, async (tx) => tx.execute(sql`select 1 as one`))).rows).toEqual([{ one: 1 }]);
        }
      } finally {
        await db.$client.end();
      }
      // drizzle-orm 0.45's own transaction sends BEGIN outside its try/finally: the pool of one is gone.
      const leaky = dyingPool();
      await errorOf(() => leaky.transaction(async (tx) => tx.execute(sql`select 1`)));
      expect(await errorOf(() => leaky.transaction(async (tx) => tx.execute(sql`select 1`)))).toMatchObject({
        message: expect.stringMatching(/timeout exceeded when trying to connect/),
      });
      void leaky.$client.end(); // never resolves: its one client is checked out for ever
      const leaked = (leaky.$client as unknown as { _clients: pg.Client[] })._clients;
      for (const c of leaked) await c.end().catch(() => {});
    },
  );
});
