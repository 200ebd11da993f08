import {
  createPool,
  type Database,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  type MaintenanceOptions,
  ping,
  purgeFinished,
  redactUrl,
  runMigrations,
  type SweepEvent,
  startMaintenance,
  WorkerRepo,
} from "@stroem/repos";
import { CliError } from "./errors.js";
import { age, duration, maybeDuration, sparkline, table } from "./format.js";
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

export interface StatsOptions {
  workspace?: string;
  taskName?: string;
  from: Date;
  to: Date;
  bucket: string;
  format: "table" | "json";
}

/** `stroem-db stats`: `JobRepo.stats` as tables with a throughput sparkline, or as JSON. Only reads. */
export async function statsCommand(target: Target, options: StatsOptions, say: (s: string) => void): Promise<void> {
  await withDb(target, async (db) => {
    const { format, ...query } = options;
    const s = await JobRepo.stats(db, query);
    if (format === "json") {
      say(JSON.stringify({ workspace: options.workspace ?? null, taskName: options.taskName ?? null, ...s }, null, 2));
      return;
    }
    const scope = `${options.workspace ? `workspace ${options.workspace}` : "every workspace"}${options.taskName ? `, task ${options.taskName}` : ""}`;
    say(`Jobs created ${s.from.toISOString()} to ${s.to.toISOString()} (${scope})`);
    say("");
    say(table(["status", "jobs"], [...Object.entries(s.jobs), ["total", s.total]]));
    say("");
    say(
      table(
        ["", "measured", "p50", "p95", "p99"],
        [
          [
            "job duration",
            s.durationMs.count,
            maybeDuration(s.durationMs.p50),
            maybeDuration(s.durationMs.p95),
            maybeDuration(s.durationMs.p99),
          ],
          [
            "step queue wait",
            s.queueWaitMs.count,
            maybeDuration(s.queueWaitMs.p50),
            maybeDuration(s.queueWaitMs.p95),
            "",
          ],
        ],
      ),
    );
    say("");
    say(
      s.tasks.length === 0
        ? "Tasks: (no jobs in the window)"
        : table(
            ["task", "jobs", "completed", "failed", "cancelled", "failure rate"],
            s.tasks.map((t) => [
              t.taskName,
              t.total,
              t.completed,
              t.failed,
              t.cancelled,
              t.failureRate === null ? "–" : `${(t.failureRate * 100).toFixed(1)}%`,
            ]),
          ),
    );
    say("");
    const finished = s.throughput.map((b) => b.finished);
    const created = s.throughput.map((b) => b.created);
    say(`Throughput per ${options.bucket} (${s.throughput.length} buckets from ${s.from.toISOString()})`);
    say(
      `  finished ${sparkline(finished)}  max ${Math.max(0, ...finished)}, total ${finished.reduce((a, b) => a + b, 0)}`,
    );
    say(
      `  created  ${sparkline(created)}  max ${Math.max(0, ...created)}, total ${created.reduce((a, b) => a + b, 0)}`,
    );
  });
}

/** One line for a sweep run that changed something (`rescue: requeued 2, failed 0, cancelled 0`). */
export function describeSweep(e: SweepEvent): string {
  const r = e.result as Record<string, unknown> | undefined;
  const count = (v: unknown) => (Array.isArray(v) ? v.length : 0);
  let what: string;
  switch (e.sweep) {
    case "rescue":
      what = `requeued ${count(r?.requeued)}, failed ${count(r?.failed)}, cancelled ${count(r?.cancelled)}`;
      break;
    case "timeouts":
      what = `steps timed out ${count(r?.steps)}, jobs timed out ${count(r?.jobs)}`;
      break;
    case "inactive":
      what = `workers marked inactive ${count(r?.workers)}`;
      break;
    case "purge":
      what = `jobs removed ${Number(r?.jobs ?? 0)}, steps ${Number(r?.steps ?? 0)}, audit events ${Number(r?.auditEvents ?? 0)}`;
      break;
    default:
      what = `changed ${e.changed}`;
  }
  return `${new Date().toISOString()} ${e.sweep}: ${what} (${Math.round(e.durationMs)} ms)`;
}

/**
 * `stroem-db maintain`: runs `startMaintenance` until `signal` aborts, a line
 * per sweep run that changed something on `say`, errors on `warn` (the loop
 * carries on); then stops, waiting for the sweep in flight.
 */
export async function maintainCommand(
  { url, pooler }: Target,
  options: MaintenanceOptions,
  signal: AbortSignal,
  say: (s: string) => void,
  warn: (s: string) => void,
): Promise<void> {
  const db = createPool(url, { max: 4, connectionTimeoutMs: 5000, applicationName: "stroem-db-maintain", pooler });
  try {
    await ping(db);
    if (signal.aborted) return;
    const m = startMaintenance(db, {
      ...options,
      onSweep: (e) => {
        if (e.changed > 0) say(describeSweep(e));
      },
      onError: (error, sweep) =>
        warn(`${new Date().toISOString()} ${sweep} failed: ${(error as Error)?.message ?? error}`),
    });
    say(`maintaining ${redactUrl(url)} (Ctrl-C to stop)`);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await m.stop();
    say("stopped");
  } finally {
    await db.$client.end();
  }
}
