import { randomUUID } from "node:crypto";
import type { JobStep } from "@stroem/schema";
import { useOwnServer } from "@stroem/testing/fixture";
import { describe, expect, it } from "vitest";
import {
  ConnectionError,
  createPool,
  isTransient,
  JobRepo,
  JobStepRepo,
  ping,
  startMaintenance,
  WorkerRepo,
} from "../src/index.js";
import { waitFor } from "./helpers.js";

// A server of this file's own, which it restarts (never the run's shared one); not
// when the run is pointed at a server of its own (no test starts one then).
describe.skipIf(Boolean(process.env.STROEM_TEST_DATABASE_URL))("the server restarts", () => {
  const own = useOwnServer();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it("a pool recovers by itself: idle connections' errors go to onConnectionError, the next queries work", {
    timeout: 180_000,
  }, async () => {
    const seen: Error[] = [];
    const db = createPool(own.url, { max: 3, onConnectionError: (e) => seen.push(e) });
    try {
      await Promise.all([ping(db), ping(db), ping(db)]);
      expect(db.$client.idleCount).toBeGreaterThan(0);
      await own.restart({ immediate: true });
      // The dropped connections are noticed (errors on idle clients, not a crash), and the
      // pool opens new ones: wait (with a budget) for a query to go through.
      await waitFor(async () => {
        try {
          await ping(db);
          return true;
        } catch (error) {
          expect(error).toBeInstanceOf(ConnectionError);
          expect(isTransient(error)).toBe(true);
          return false;
        }
      }, 60_000);
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((e) => isTransient(e))).toBe(true);
    } finally {
      await db.$client.end();
    }
  });

  // 2-5 s alone; the budget is for 2 cores busy with the rest of the suite.
  it("a worker carries on across a restart: every job completes, each step once", { timeout: 240_000 }, async () => {
    const db = createPool(own.url, { max: 4, onConnectionError: () => {} });
    const maintenance = startMaintenance(db, { staleAfterMs: 3000, rescueEveryMs: 200, onError: () => {} });
    const workerId = randomUUID();
    const held = new Map<string, { jobId: string; stepName: string; attempt: number }>();
    let done = false;
    let completed = 0;
    let failure: unknown;
    /** The loop's own failure ends the wait at once, with its reason. */
    const alive = () => {
      if (failure) throw failure;
    };
    /** Calls `fn` until it succeeds, as long as its errors are transient. */
    const persist = async <T>(fn: () => Promise<T>): Promise<T> => {
      for (;;) {
        try {
          return await fn();
        } catch (error) {
          if (!isTransient(error)) throw error;
          await sleep(100);
        }
      }
    };
    try {
      const jobIds = await JobRepo.createMany(
        db,
        Array.from({ length: 30 }, () => ({
          job: { taskName: "restart", sourceType: "api" as const },
          steps: [
            { stepName: "a", actionName: "x", actionType: "shell" as const },
            { stepName: "b", actionName: "x", actionType: "shell" as const, dependsOn: ["a"] },
          ],
        })),
      );
      await WorkerRepo.register(db, { workerId, name: "w", capabilities: ["shell"] });
      const beat = setInterval(() => {
        void WorkerRepo.heartbeat(db, workerId, { running: [...held.values()] }).catch(() => {});
      }, 200);
      const loop = (async () => {
        while (!done) {
          let step: JobStep | undefined;
          try {
            step = await JobStepRepo.claimReadyStep(db, ["shell"], workerId);
          } catch (error) {
            if (!isTransient(error)) {
              failure = error;
              throw error;
            }
            await sleep(100);
            continue;
          }
          if (!step) {
            await sleep(20);
            continue;
          }
          const ref = { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts };
          held.set(`${ref.jobId}/${ref.stepName}`, ref);
          await persist(() => JobStepRepo.complete(db, ref, { attempt: ref.attempt })).catch(() => {});
          held.delete(`${ref.jobId}/${ref.stepName}`);
          completed++;
        }
      })();
      try {
        await waitFor(async () => {
          alive();
          return completed >= 10;
        }, 60_000);
        await own.restart({ immediate: true });
        await waitFor(async () => {
          alive();
          const counts = await JobRepo.countByStatus(db).catch(() => undefined);
          return counts?.completed === jobIds.length;
        }, 120_000);
      } finally {
        done = true;
        clearInterval(beat);
        await loop;
      }
      for (const jobId of jobIds) {
        for (const s of await JobStepRepo.getStepsForJob(db, jobId)) {
          // Each step holds the output of the attempt that holds it.
          expect([s.status, s.output]).toEqual(["completed", { attempt: s.attempts }]);
        }
      }
    } finally {
      await maintenance.stop();
      await db.$client.end();
    }
  });
});
