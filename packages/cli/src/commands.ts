import {
  createPool,
  type Database,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  ping,
  purgeFinished,
  runMigrations,
  WorkerRepo,
} from "@stroem/repos";
import { CliError } from "./errors.js";
import { age, duration, table } from "./format.js";
import { renderMermaid, renderText } from "./graph.js";

export function resolveUrl(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const url = flag ?? env.DATABASE_URL;
  if (!url) throw new CliError("no database URL: pass --url or set DATABASE_URL");
  return url;
}

/** Where the operators' commands connect: a URL, and whether it is a transaction pooler (PgBouncer). */
export interface Target {
  url: string;
  pooler?: "transaction";
}

async function withDb<T>({ url, pooler }: Target, fn: (db: Database) => Promise<T>): Promise<T> {
  // Operators' commands: no statement timeout (migrations may build indexes), fail fast on connect.
  const db = createPool(url, {
    max: 2,
    statementTimeoutMs: 0,
    connectionTimeoutMs: 5000,
    applicationName: "stroem-db-cli",
    pooler,
  });
  try {
    await ping(db);
    return await fn(db);
  } finally {
    await db.$client.end();
  }
}

export async function migrateCommand(target: Target, say: (s: string) => void): Promise<void> {
  await withDb(target, async (db) => {
    const result = await runMigrations(db);
    if (result.applied.length === 0) say(`Already up to date (${result.all.length} migrations).`);
    else for (const tag of result.applied) say(`applied ${tag}`);
  });
}

export async function statusCommand(target: Target, staleAfterMs: number, say: (s: string) => void): Promise<void> {
  await withDb(target, async (db) => {
    const now = new Date();
    const [workers, jobs, backlog] = await Promise.all([
      WorkerRepo.list(db),
      JobRepo.countByStatus(db),
      JobStepRepo.readyBacklog(db),
    ]);
    say("Workers");
    say(
      workers.length === 0
        ? "  (none registered)"
        : table(
            ["worker", "name", "capabilities", "status", "last heartbeat", "health"],
            workers.map((w) => [
              w.workerId,
              w.name,
              w.capabilities.join(","),
              w.status,
              `${age(w.lastHeartbeat, now)} ago`,
              w.status === "active" && w.lastHeartbeat && now.getTime() - w.lastHeartbeat.getTime() <= staleAfterMs
                ? "alive"
                : "stale",
            ]),
          ),
    );
    say("");
    say("Jobs");
    say(table(["status", "jobs"], Object.entries(jobs)));
    say("");
    say("Ready steps");
    say(
      backlog.length === 0
        ? "  (none ready)"
        : table(
            ["action type", "ready", "oldest waiting"],
            backlog.map((b) => [b.actionType, b.ready, age(b.oldestReadyAt, now)]),
          ),
    );
  });
}

export async function graphCommand(
  target: Target,
  jobId: string,
  format: "text" | "mermaid",
  say: (s: string) => void,
): Promise<void> {
  await withDb(target, async (db) => {
    const job = await JobRepo.get(db, jobId);
    if (!job) throw new JobNotFoundError(jobId);
    const steps = await JobStepRepo.getStepsForJob(db, jobId);
    if (format === "mermaid") {
      say(renderMermaid(steps));
      return;
    }
    say(`job ${job.jobId}  ${job.workspace}/${job.taskName}  ${job.status}`);
    say(steps.length ? renderText(steps) : "  (no steps)");
  });
}

export interface PurgeCommandOptions {
  olderThanMs: number;
  auditOlderThanMs?: number;
  batchSize: number;
  maxBatches?: number;
}

/** `stroem-db purge`: `purgeFinished` with the given ages, then the counts. */
export async function purgeCommand(target: Target, o: PurgeCommandOptions, say: (s: string) => void): Promise<void> {
  await withDb(target, async (db) => {
    const t0 = performance.now();
    const r = await purgeFinished(db, {
      olderThan: o.olderThanMs,
      batchSize: o.batchSize,
      ...(o.auditOlderThanMs === undefined ? {} : { auditOlderThan: o.auditOlderThanMs }),
      ...(o.maxBatches === undefined ? {} : { maxBatches: o.maxBatches }),
    });
    const n = (x: number) => x.toLocaleString("en-US");
    say(
      table(
        ["removed", "count", "older than"],
        [
          ["jobs", n(r.jobs), r.jobsBefore.toISOString()],
          ["steps", n(r.steps), r.jobsBefore.toISOString()],
          ["audit events", n(r.auditEvents), r.auditBefore.toISOString()],
        ],
      ),
    );
    say(
      `${n(r.batches)} batches of up to ${n(o.batchSize)} in ${duration(performance.now() - t0)}${r.complete ? "" : "; stopped at --max-batches, more may be left"}`,
    );
  });
}
