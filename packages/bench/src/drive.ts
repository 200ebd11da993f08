/**
 * Runs "ours" the way a worker fleet would: `workers` loops, each on its own
 * pool of one connection, claiming (one step or a batch) and reporting until
 * `expected` steps are done. Checks exactly-once as it goes: a step handed
 * out twice is counted, and a refused report fails the run.
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database } from "@stroem/repos";
import type { JobStep } from "@stroem/schema";
import { claimMany, claimOne, complete, registerWorker, reportAndClaim, reportMany } from "./ours.js";

const CAPS = ["shell"] as const;

export interface DriveOptions {
  url: string;
  workers: number;
  /** 1: `claimReadyStep` + `complete`; more: `claimReadySteps(limit)` + `reportMany`. */
  batch: number;
  /** Single mode: report with `reportAndClaim`, which also claims the next step. */
  claimNext?: boolean;
  /** Stop once this many steps were reported. */
  expected: number;
  /** Called with each single report's duration in ms (single mode only). */
  onReport?: (step: JobStep, ms: number) => void;
}

export interface DriveResult {
  seconds: number;
  reported: number;
  /** Steps claimed more than once during the run. */
  duplicates: number;
  /** Empty claims (nothing ready at that moment). */
  idleClaims: number;
  /** Worker time spent in claims and in reports, ms summed over workers. */
  claimMs: number;
  reportMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function drive(options: DriveOptions): Promise<DriveResult> {
  const pools: Database[] = Array.from({ length: options.workers }, () =>
    createPool(options.url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-worker" }),
  );
  const ids = pools.map(() => randomUUID());
  try {
    await Promise.all(pools.map((db, i) => registerWorker(db, ids[i]!, CAPS)));
    const seen = new Set<string>();
    let reported = 0;
    let duplicates = 0;
    let idleClaims = 0;
    let claimMs = 0;
    let reportMs = 0;
    let stop = false;
    const done = () => stop || reported >= options.expected;
    const note = (steps: readonly JobStep[]) => {
      for (const s of steps) {
        const key = `${s.jobId}/${s.stepName}`;
        if (seen.has(key)) duplicates += 1;
        seen.add(key);
      }
    };
    const loop = async (db: Database, workerId: string) => {
      let next: JobStep | undefined; // claimed by the last reportAndClaim
      while (!done()) {
        const c0 = performance.now();
        const steps = next
          ? [next]
          : options.batch === 1
            ? await claimOne(db, CAPS, workerId).then((s) => (s ? [s] : []))
            : await claimMany(db, CAPS, workerId, options.batch);
        next = undefined;
        const c1 = performance.now();
        claimMs += c1 - c0;
        if (steps.length === 0) {
          idleClaims += 1;
          await sleep(1); // others are finishing what would make more steps ready
          continue;
        }
        note(steps);
        if (options.batch === 1) {
          const step = steps[0]!;
          const t0 = performance.now();
          const ref = { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts };
          if (options.claimNext) {
            next = (await reportAndClaim(db, { ...ref, outcome: "completed" }, CAPS)).next;
          } else {
            await complete(db, ref);
          }
          const ms = performance.now() - t0;
          reportMs += ms;
          options.onReport?.(step, ms);
          reported += 1;
        } else {
          const results = await reportMany(
            db,
            steps.map((s) => ({
              jobId: s.jobId,
              stepName: s.stepName,
              workerId,
              attempt: s.attempts,
              outcome: "completed" as const,
            })),
          );
          reportMs += performance.now() - c1;
          const refused = results.find((r) => !r.ok);
          if (refused && !refused.ok) throw refused.error;
          reported += results.length;
        }
      }
    };
    const started = performance.now();
    const outcomes = await Promise.allSettled(
      pools.map((db, i) =>
        loop(db, ids[i]!).catch((error) => {
          stop = true; // the other loops finish their current step and exit
          throw error;
        }),
      ),
    );
    const failure = outcomes.find((o) => o.status === "rejected");
    if (failure) throw failure.reason;
    return { seconds: (performance.now() - started) / 1000, reported, duplicates, idleClaims, claimMs, reportMs };
  } finally {
    await Promise.all(pools.map((p) => p.$client.end()));
  }
}
