/**
 * A chaos worker: a child process using only @stroem/repos' public API, as a
 * real worker would. Registers, heartbeats with the steps it holds, claims
 * one step at a time, "runs" it for a few ms and reports
 * `{ worker, attempt }` as its output. Every report the database accepted
 * is appended to its log file (one JSON line: job, step, attempt, worker,
 * repeated) before anything else happens, so a SIGKILL loses at most the
 * line of a report whose answer had not arrived yet. Transient errors
 * (killed backends, the server restarting) are waited out; a report the
 * database refuses (the step was given back meanwhile) is dropped. Exits
 * when its parent goes away (IPC disconnect) or on SIGTERM.
 *
 * argv[2]: JSON of `ChaosWorkerConfig`.
 */
import { appendFileSync } from "node:fs";
import { createPool, isTransient, JobStepRepo, WorkerRepo } from "@stroem/repos";
import { prng } from "./random.js";

export interface ChaosWorkerConfig {
  url: string;
  workerId: string;
  name: string;
  logFile: string;
  heartbeatMs: number;
  /** Longest simulated step, ms. */
  maxStepMs: number;
  seed: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(config: ChaosWorkerConfig): Promise<void> {
  const { workerId } = config;
  const random = prng(config.seed);
  const db = createPool(config.url, {
    max: 3,
    applicationName: `stroem-chaos-${config.name}`,
    connectionTimeoutMs: 5000,
    onConnectionError: () => {},
  });
  /** Runs `fn` until it succeeds, waiting out transient errors; other errors are thrown. */
  const persist = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (;;) {
      try {
        return await fn();
      } catch (error) {
        if (!isTransient(error)) throw error;
        await sleep(100 + random() * 100);
      }
    }
  };
  await persist(() => WorkerRepo.register(db, { workerId, name: config.name, capabilities: ["shell"] }));

  const held = new Map<string, { jobId: string; stepName: string; attempt: number }>();
  const stopped = new Set<string>();
  const key = (jobId: string, stepName: string, attempt: number) => `${jobId}/${stepName}/${attempt}`;
  const beat = async () => {
    try {
      const stop = await WorkerRepo.heartbeat(db, workerId, { running: [...held.values()] });
      for (const s of stop) stopped.add(key(s.jobId, s.stepName, s.attempt));
    } catch {} // transient: the next beat tries again
    setTimeout(beat, config.heartbeatMs);
  };
  setTimeout(beat, config.heartbeatMs);

  for (;;) {
    let step: Awaited<ReturnType<typeof JobStepRepo.claimReadyStep>>;
    try {
      step = await JobStepRepo.claimReadyStep(db, ["shell"], workerId);
    } catch (error) {
      // A claim whose answer was lost may have committed: the heartbeat gives it back.
      if (!isTransient(error)) throw error;
      await sleep(50 + random() * 50);
      continue;
    }
    if (!step) {
      await sleep(10 + random() * 20);
      continue;
    }
    const ref = { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts };
    const k = key(ref.jobId, ref.stepName, ref.attempt);
    held.set(k, { jobId: ref.jobId, stepName: ref.stepName, attempt: ref.attempt });
    await sleep(random() * config.maxStepMs);
    if (!stopped.has(k)) {
      try {
        const result = await persist(() => JobStepRepo.complete(db, ref, { worker: workerId, attempt: ref.attempt }));
        appendFileSync(
          config.logFile,
          `${JSON.stringify({ jobId: ref.jobId, stepName: ref.stepName, attempt: ref.attempt, worker: workerId, repeated: result.repeated })}\n`,
        );
      } catch {
        // Refused: the step was given back (rescued, orphaned) and is someone else's now.
      }
    }
    held.delete(k);
    stopped.delete(k);
  }
}

const config = JSON.parse(process.argv[2] ?? "{}") as ChaosWorkerConfig;
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
main(config).catch((error) => {
  process.stderr.write(`chaos worker ${config.name}: ${error?.stack ?? error}\n`);
  process.exit(1);
});
