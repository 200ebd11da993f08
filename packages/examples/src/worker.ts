/**
 * A worker, end to end: the file the repos README quotes, type-checked with
 * `tsc --strict` and run to a completed job in CI (in this workspace and in
 * a fresh project that installs the packed packages).
 *
 *   DATABASE_URL=postgres://… node dist/worker.js   # your server
 *   node dist/worker.js                             # an embedded PostgreSQL
 */
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";
import { startEmbeddedPostgres } from "@stroem/embedded-pg";
import {
  createPool,
  JobRepo,
  JobStepRepo,
  listenForReady,
  type NewFlowStep,
  runMigrations,
  StepOwnershipError,
  startMaintenance,
  WorkerRepo,
} from "@stroem/repos";
import type { JobStep } from "@stroem/schema";

/** A CI pipeline: checkout, then test and build side by side, then deploy once both are done. */
export const pipeline: NewFlowStep[] = [
  { stepName: "checkout", action: "git-clone", actionType: "shell", actionSpec: { cmd: "git clone $REPO ." } },
  {
    stepName: "test",
    action: "npm-test",
    actionType: "shell",
    dependsOn: ["checkout"],
    // A failure is retried twice, after 0 s, then 0 s (a real step would wait longer: the default is 10 s, doubling).
    maxRetries: 2,
    retryBackoffSecs: 0,
  },
  { stepName: "build", action: "npm-build", actionType: "shell", dependsOn: ["checkout"], timeoutSecs: 600 },
  { stepName: "deploy", action: "deploy", actionType: "shell", dependsOn: ["test", "build"] },
];

/** The step's own work. It throws when the step fails (here: the first run of `test`, to show a retry). */
async function run(step: JobStep, signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) throw new Error("stopped");
  if (step.stepName === "test" && step.attempts === 1) throw new Error("flaky test: connection reset");
  return { ran: step.actionName, attempt: step.attempts };
}

const log = (...args: unknown[]) => console.log("[worker]", ...args);

/** Starts an embedded PostgreSQL unless a URL is given, runs the pipeline on it, and stops the server. */
export async function main(databaseUrl = process.env.DATABASE_URL): Promise<string> {
  const given = databaseUrl?.trim() || undefined; // an empty DATABASE_URL: the embedded server
  const server = given ? undefined : await startEmbeddedPostgres();
  try {
    return await runPipeline(given ?? (server as { url: string }).url);
  } finally {
    await server?.stop();
  }
}

/** Creates one pipeline job, runs it with one worker until it is finished, and returns its final status. */
export async function runPipeline(url: string): Promise<string> {
  const db = createPool(url, { max: 4 });
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    await runMigrations(db);
    const jobId = await JobRepo.createWithSteps(db, { taskName: "ci", sourceType: "api" }, pipeline);
    log("created job", jobId);

    // The worker's id must be a UUID; register before the first claim (an unregistered worker is refused).
    const workerId = randomUUID();
    await WorkerRepo.register(db, { workerId, name: "example-worker", capabilities: ["shell"] });
    const wake = await listenForReady(url, { capabilities: ["shell"] }); // a direct (session) connection
    const maintenance = startMaintenance(db, { onError: (error, sweep) => log(`maintenance ${sweep}:`, error) });

    // Steps this worker runs, each with an AbortController its heartbeat may fire.
    const inFlight = new Map<string, { step: JobStep; abort: AbortController }>();
    const key = (jobId: string, stepName: string, attempt: number) => `${jobId}/${stepName}/${attempt}`;
    const heartbeat = setInterval(() => {
      const running = [...inFlight.values()].map(({ step }) => ({
        jobId: step.jobId,
        stepName: step.stepName,
        attempt: step.attempts,
      }));
      WorkerRepo.heartbeat(db, workerId, { running })
        .then((toStop) => {
          // Cancelled, timed out or given back: stop running it (its report would be refused).
          for (const s of toStop) inFlight.get(key(s.jobId, s.stepName, s.attempt))?.abort.abort(s.reason);
        })
        .catch((error) => log("heartbeat failed (the next one retries):", error)); // never crash the worker
    }, 1000);

    try {
      while (!stop.signal.aborted) {
        const job = await JobRepo.get(db, jobId);
        if (job && ["completed", "failed", "cancelled"].includes(job.status)) break;
        const step = await JobStepRepo.claimReadyStep(db, ["shell"], workerId);
        if (!step) {
          await wake.wait({ timeoutMs: 1000, signal: stop.signal }); // sleeps until a shell step is ready
          continue;
        }
        // The guard: this worker, this claim. Every report carries it.
        const ref = { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts };
        const abort = new AbortController();
        inFlight.set(key(ref.jobId, ref.stepName, ref.attempt), { step, abort });
        try {
          let output: unknown;
          try {
            output = await run(step, abort.signal);
          } catch (error) {
            // The step's own failure: report it (its retry policy decides whether it runs again).
            const failed = await JobStepRepo.fail(db, ref, error instanceof Error ? error.message : String(error));
            log(`${step.stepName} failed`, failed.retried ? `(retry at ${failed.retryAt?.toISOString()})` : "");
            continue;
          }
          const done = await JobStepRepo.complete(db, ref, output);
          log(`${step.stepName} completed; promoted [${done.promoted.join(", ")}]; job ${done.jobStatus}`);
        } catch (error) {
          // A refused report: the step is no longer this claim's (rescued, timed out, cancelled).
          // Nothing was written; never report it again as a failure.
          if (error instanceof StepOwnershipError) log(`${step.stepName}: report refused, no longer ours`);
          else throw error;
        } finally {
          inFlight.delete(key(ref.jobId, ref.stepName, ref.attempt));
        }
      }
    } finally {
      clearInterval(heartbeat);
      await maintenance.stop(); // waits for a sweep in flight
      await wake.close();
      await WorkerRepo.deactivate(db, workerId);
    }
    const status = (await JobRepo.get(db, jobId))?.status ?? "unknown";
    log(`job ${jobId} ${status}`);
    return status;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await db.$client.end();
  }
}

// Run as a script (not when imported by the test).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (status) => {
      process.exitCode = status === "completed" ? 0 : 1;
    },
    (error) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
