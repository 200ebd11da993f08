import { randomBytes } from "node:crypto";
import { dropDatabase, startEmbeddedPostgres, withClient, withDatabase } from "@stroem/embedded-pg";
import { createPool, type Database, JobRepo, redactUrl, runMigrations, startMaintenance } from "@stroem/repos";
import { PIPELINE, REGIONS } from "./pipeline.js";
import { type DemoReport, report } from "./report.js";
import { runWorkers } from "./workers.js";

export { capabilitiesOf, PIPELINE, REGIONS, SMOKE_TEST, stepOutcome } from "./pipeline.js";
export type { DemoCheck, DemoReport } from "./report.js";
export type { CancelReport, Run } from "./workers.js";

/** The demo's phases, in order; each begins with a line of output. */
export const DEMO_PHASES = ["start", "migrate", "jobs", "workers", "report"] as const;
export type DemoPhase = (typeof DEMO_PHASES)[number];

export interface DemoOptions {
  jobs: number;
  workers: number;
  /** Probability that a step fails, 0 to 1. */
  failRate: number;
  seed: number;
  /** An existing server: the demo works in a database of its own there and drops it. Default: embedded PostgreSQL. */
  url?: string;
  /** Where progress and the report go. */
  out: NodeJS.WritableStream & { isTTY?: boolean };
  /** Aborting it stops the demo at whatever phase it is in; `runDemo` then cleans up and rejects with its reason. */
  signal?: AbortSignal;
  /** Longest simulated step, ms. Default 40. */
  maxStepMs?: number;
  /**
   * Test seam: at the start of this phase, wait until `signal` aborts, so a
   * test can interrupt a phase that would otherwise be over before its
   * signal arrives.
   */
  holdAt?: DemoPhase;
}

/**
 * Runs the demo end to end: server (or a scratch database on `url`),
 * migrations, jobs, concurrent workers with live progress, then the report
 * and the database checks. Always stops what it started (the embedded server
 * and its files, or its database on `url`), also when `signal` aborts, in
 * any phase; then it rejects with the signal's reason.
 */
export async function runDemo(o: DemoOptions): Promise<DemoReport> {
  const say = (line = "") => o.out.write(`${line}\n`);
  const { signal } = o;
  const phase = async (name: DemoPhase) => {
    signal?.throwIfAborted();
    if (o.holdAt === name && signal) {
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      signal.throwIfAborted();
    }
  };
  const cleanup: Array<() => Promise<void>> = [];
  try {
    await phase("start");
    let url: string;
    if (o.url) {
      const adminUrl = o.url;
      const name = `stroem_demo_${randomBytes(4).toString("hex")}`;
      cleanup.push(() => dropDatabase(adminUrl, name));
      await withClient(adminUrl, (c) => c.query(`create database ${c.escapeIdentifier(name)}`));
      url = withDatabase(adminUrl, name);
      say(`Using database ${name} on ${redactUrl(adminUrl)} (dropped at the end).`);
    } else {
      say("Starting an embedded PostgreSQL…");
      const server = await startEmbeddedPostgres({ signal });
      cleanup.push(() => server.stop());
      url = withDatabase(server.url, "postgres");
      say(`Embedded PostgreSQL is up at ${redactUrl(server.url)} (files in ${server.dataDir}).`);
    }

    await phase("migrate");
    const db = createPool(url, { max: 4, applicationName: "stroem-demo" });
    cleanup.push(() => db.$client.end());
    // Not interruptible half-way (one transaction, well under a second): checked right after.
    const migrated = await runMigrations(db);
    say(`Migrated: ${migrated.applied.length ? migrated.applied.join(", ") : "already up to date"}.`);

    await phase("jobs");
    const jobIds = await createJobs(db, o.jobs, signal);
    const cancelled = jobIds[jobIds.length - 1] as string;
    say(
      `Created ${o.jobs} jobs of ${PIPELINE.length} steps (an approval gate, a deploy loop over ${REGIONS.length} regions, a smoke test as a child job); starting ${o.workers} workers and the server.`,
    );
    say(`The last job (#${jobIds.length - 1}) is cancelled when its first step starts.`);

    await phase("workers");
    // Maintenance alongside, as in production: a worker that died would have
    // its step back in the queue within staleAfter + one rescue interval.
    let sweeps = 0;
    let changes = 0;
    const maintenance = startMaintenance(db, {
      staleAfterMs: 5_000,
      rescueEveryMs: 1_000,
      timeoutsEveryMs: 1_000,
      inactiveEveryMs: 10_000,
      onSweep: (e) => {
        sweeps++;
        changes += e.changed;
      },
      onError: (error, sweep) => say(`maintenance: ${sweep} failed: ${(error as Error)?.message ?? error}`),
    });
    cleanup.push(() => maintenance.stop());
    const worked = await runWorkers({
      url,
      workers: o.workers,
      seed: o.seed,
      failRate: o.failRate,
      maxStepMs: o.maxStepMs ?? 40,
      jobIds,
      out: o.out,
      signal,
      cancel: { jobId: cancelled, reason: CANCEL_REASON, db },
    });

    await maintenance.stop();
    say(`Maintenance ran alongside: ${sweeps} sweeps (rescue, timeouts, inactive workers), ${changes} changes.`);

    await phase("report");
    return await report(db, jobIds, worked, say, signal);
  } finally {
    for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
  }
}

/** Why the demo cancels its last job (`JobRepo.cancel`'s reason, stored on the job). */
export const CANCEL_REASON = "cancelled by a user: a newer push is coming";

/** Jobs per `createMany` call: one statement each, and a point to stop at between them. */
const CREATE_BATCH = 100;

/** Creates `n` pipeline jobs, a batch per statement, stopping between batches when `signal` aborts. */
async function createJobs(db: Database, n: number, signal: AbortSignal | undefined): Promise<string[]> {
  const jobIds: string[] = [];
  for (let first = 0; first < n; first += CREATE_BATCH) {
    signal?.throwIfAborted();
    const items = Array.from({ length: Math.min(CREATE_BATCH, n - first) }, (_, k) => ({
      job: {
        workspace: "demo",
        taskName: "ci-pipeline",
        sourceType: "trigger" as const,
        sourceId: `push-${first + k}`,
        input: { commit: first + k, regions: REGIONS },
      },
      steps: PIPELINE,
    }));
    jobIds.push(...(await JobRepo.createMany(db, items)));
  }
  return jobIds;
}
