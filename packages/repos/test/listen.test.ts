import type { NewFlowStep } from "@stroem/schema";
import { worker } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { eq, sql } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import {
  ConnectionError,
  InvalidInputError,
  JobRepo,
  JobStepRepo,
  listenForReady,
  type ReadyListener,
  readyChannel,
} from "../src/index.js";
import { errorOf, registerWorker, waitFor } from "./helpers.js";

const t = useTestDb();
const open: ReadyListener[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((l) => l.close()));
});
const listen = async (capabilities?: string[]) => {
  const l = await listenForReady(t.url, { capabilities });
  open.push(l);
  return l;
};

const chain: NewFlowStep[] = [
  { stepName: "build", actionName: "b", actionType: "docker" },
  {
    stepName: "deploy",
    actionName: "d",
    actionType: "shell",
    dependsOn: ["build"],
    maxRetries: 1,
    retryBackoffSecs: 0,
  },
];
const newJob = { taskName: "t", sourceType: "api" } as const;

// LISTEN needs a session connection: through a transaction pooler the listening
// server connection goes back to the pool after the LISTEN, to other clients.
describe.skipIf(t.pooler)(
  "listenForReady (skipped through a transaction pooler: LISTEN needs a session connection)",
  () => {
    it("wakes on creation, promotion and a rescue's requeue, only for its capabilities", async () => {
      const shell = await listen(["shell"]);
      const docker = await listen(["docker"]);
      const any = await listen();
      // Nothing yet: waits time out.
      expect(await shell.wait({ timeoutMs: 50 })).toBe(false);

      // Creation makes `build` (docker) ready.
      const jobId = await JobRepo.createWithSteps(t.db, newJob, chain);
      expect(await docker.wait({ timeoutMs: 10_000 })).toBe(true);
      expect(await any.wait({ timeoutMs: 10_000 })).toBe(true);
      expect(await shell.wait({ timeoutMs: 100 })).toBe(false);

      // Completing it promotes `deploy` (shell).
      const w = await registerWorker(t.db);
      const [step] = await JobStepRepo.claimReadySteps(t.db, ["docker"], w, 1);
      await JobStepRepo.complete(t.db, { jobId, stepName: "build", workerId: w, attempt: step?.attempts });
      expect(await shell.wait({ timeoutMs: 10_000 })).toBe(true);

      // A rescue's requeue.
      await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
      await t.db.update(worker).set({ lastHeartbeat: sql`now() - interval '1 hour'` }).where(eq(worker.workerId, w));
      expect((await JobStepRepo.rescueStaleSteps(t.db, { staleAfterMs: 1000 })).requeued).toHaveLength(1);
      expect(await shell.wait({ timeoutMs: 10_000 })).toBe(true);
    });

    it("keeps a wake-up that arrives between two waits, and stops on abort and close", async () => {
      const l = await listen(["docker"]);
      await JobRepo.createWithSteps(t.db, newJob, chain);
      // Notified while nobody waited: the next wait returns at once, the one after waits.
      await waitFor(async () => l.wait({ timeoutMs: 20 }));
      expect(await l.wait({ timeoutMs: 20 })).toBe(false);
      const controller = new AbortController();
      const aborted = l.wait({ signal: controller.signal });
      controller.abort();
      expect(await aborted).toBe(false);
      const pending = l.wait();
      await l.close();
      expect(await pending).toBe(false);
    });

    it("reconnects by itself after its connection is killed, and wakes its waiters then", async () => {
      const l = await listen(["docker"]);
      const waiting = l.wait({ timeoutMs: 30_000 });
      await t.db.execute(
        sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'stroem-listener' and datname = current_database()`,
      );
      // The reconnect wakes the waiter (a notification may have been missed)...
      expect(await waiting).toBe(true);
      // ...and it listens again.
      await waitFor(async () => {
        const r = await t.db.execute<{ n: number }>(
          sql`select count(*)::int as n from pg_stat_activity where application_name = 'stroem-listener' and datname = current_database()`,
        );
        return (r.rows[0]?.n ?? 0) === 1;
      });
      await JobRepo.createWithSteps(t.db, newJob, chain);
      expect(await l.wait({ timeoutMs: 10_000 })).toBe(true);
    });

    it("says what is wrong with a bad URL, an unreachable server or a bad capability", async () => {
      expect(await errorOf(() => listenForReady("http://x"))).toBeInstanceOf(InvalidInputError);
      expect(await errorOf(() => listenForReady(t.url, { capabilities: ["vm"] }))).toBeInstanceOf(InvalidInputError);
      expect(await errorOf(() => listenForReady("postgres://u:p@127.0.0.1:1/db"))).toBeInstanceOf(ConnectionError);
    });

    it("listens on its schema's own channel: another schema's wake-ups in the same database never reach it", async () => {
      const { rows } = await t.db.execute<{ schema: string; channel: string }>(
        sql`select current_schema() as schema, stroem_ready_channel() as channel`,
      );
      const own = rows[0];
      expect(own?.channel).toBe(readyChannel(own?.schema));
      const l = await listen(["shell"]);
      // What a deployment in another schema of this database sends when its steps become ready.
      await t.db.execute(sql`select pg_notify(${readyChannel("another_deployment")}, 'shell')`);
      expect(await l.wait({ timeoutMs: 300 })).toBe(false);
      await JobRepo.createWithSteps(t.db, newJob, [{ stepName: "s", actionName: "x", actionType: "shell" }]);
      expect(await l.wait({ timeoutMs: 10_000 })).toBe(true);
      // The channel follows the search path: another schema first, another channel.
      await t.db.execute(sql`create schema if not exists another_deployment`);
      const other = await t.db.transaction(async (tx) => {
        await tx.execute(sql`set local search_path = another_deployment, ${sql.raw(own?.schema ?? "public")}`);
        return (await tx.execute<{ channel: string }>(sql`select stroem_ready_channel() as channel`)).rows[0];
      });
      expect(other?.channel).toBe("stroem_ready.another_deployment");
    });
  },
);
