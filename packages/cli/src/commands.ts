import {
  ArtifactRepo,
  createPool,
  type Database,
  JobNotFoundError,
  JobRepo,
  JobStepRepo,
  type MaintenanceOptions,
  oldestRunning,
  ping,
  purgeFinished,
  type RunningStep,
  redactUrl,
  runMigrations,
  type SweepEvent,
  startMaintenance,
  stuckSteps,
  TaskStateRepo,
  type UnmatchedReason,
  unmatchedReady,
  unmatchedReadySteps,
  WorkerRepo,
} from "@stroem/repos";
import type { JobStatus, SourceType } from "@stroem/schema";
import { CliError } from "./errors.js";
import { age, duration, maybeDuration, sparkline, table } from "./format.js";
import { renderJobTimes, renderMermaid, renderRetries, renderStepTable, renderText } from "./graph.js";

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

export interface StatusOptions {
  /** A worker is stale after this long without a heartbeat. */
  staleAfterMs: number;
  /** Rows in each list of the stuck section. */
  limit: number;
  format: "table" | "json";
}

/** A worker as the tables show it: its name and the first 8 characters of its id. */
function workerLabel(name: string | null | undefined, workerId: string): string {
  return name ? `${name} (${workerId.slice(0, 8)})` : workerId;
}

/** Why a worker is not doing its work: `inactive`, `never heartbeated`, or `silent 5m0s`. */
function workerState(s: RunningStep, now: Date): string {
  if (s.workerStatus !== "active") return s.workerStatus;
  return s.workerLastHeartbeat ? `silent ${age(s.workerLastHeartbeat, now)}` : "never heartbeated";
}

/** `running for`, with a pending cancel request. */
function runningFor(s: RunningStep): string {
  return `${duration(s.runningForMs)}${s.cancelRequestedAt ? " (cancel requested)" : ""}`;
}

/**
 * `stroem-db status`: workers, jobs by status, the ready backlog, and what is
 * stuck: running steps held by stale or inactive workers, the oldest running
 * steps, and ready steps no live worker can take. One read each, in parallel.
 */
export async function statusCommand(target: Target, o: StatusOptions, say: (s: string) => void): Promise<void> {
  await withDb(target, async (db) => {
    const now = new Date();
    const [workers, jobs, backlog, held, oldest, unmatched, unmatchedSteps] = await Promise.all([
      WorkerRepo.list(db),
      JobRepo.countByStatus(db),
      JobStepRepo.readyBacklog(db),
      stuckSteps(db, { staleAfterMs: o.staleAfterMs, limit: o.limit }),
      oldestRunning(db, { limit: o.limit }),
      unmatchedReady(db, { staleAfterMs: o.staleAfterMs }),
      unmatchedReadySteps(db, { staleAfterMs: o.staleAfterMs, limit: o.limit }),
    ]);
    const health = (w: (typeof workers)[number]) =>
      w.status === "active" && w.lastHeartbeat && now.getTime() - w.lastHeartbeat.getTime() <= o.staleAfterMs
        ? "alive"
        : "stale";
    if (o.format === "json") {
      say(
        JSON.stringify(
          {
            workers: workers.map((w) => ({ ...w, health: health(w) })),
            jobs,
            ready: backlog,
            stuck: {
              staleAfterMs: o.staleAfterMs,
              heldByStaleWorkers: held,
              oldestRunning: oldest,
              unmatchedReady: unmatched,
              unmatchedReadySteps: unmatchedSteps,
            },
          },
          null,
          2,
        ),
      );
      return;
    }
    say("Workers");
    say(
      workers.length === 0
        ? "  (none registered)"
        : table(
            ["worker", "name", "capabilities", "tags", "status", "last heartbeat", "health"],
            workers.map((w) => [
              w.workerId,
              w.name,
              w.capabilities.join(","),
              tagsLabel(w.tags, w.exclusive),
              w.status,
              `${age(w.lastHeartbeat, now)} ago`,
              health(w),
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
    say("");
    const staleAfter = duration(o.staleAfterMs);
    say(`Stuck: running steps held by stale or inactive workers (no heartbeat for ${staleAfter}): ${held.total}`);
    if (held.total > 0) {
      say(
        table(
          ["job", "step", "worker", "worker state", "attempt", "running for"],
          held.steps.map((s) => [
            s.jobId,
            s.stepName,
            workerLabel(s.workerName, s.workerId),
            workerState(s, now),
            s.attempt,
            runningFor(s),
          ]),
          "llllrr",
        ),
      );
      if (held.total > held.steps.length)
        say(`  … and ${held.total - held.steps.length} more (--limit ${Math.min(1000, held.total)} to list them)`);
      say("  `stroem-db maintain` (or the server's maintenance) gives the stale workers' steps back to the queue.");
    }
    say("");
    say(`Stuck: oldest running steps${oldest.length ? ` (${oldest.length})` : ""}`);
    say(
      oldest.length === 0
        ? "  (nothing running)"
        : table(
            ["job", "step", "action type", "worker", "attempt", "running for"],
            oldest.map((s) => [
              s.jobId,
              s.stepName,
              s.actionType,
              workerLabel(s.workerName, s.workerId),
              s.attempt,
              runningFor(s),
            ]),
            "llllrr",
          ),
    );
    say("");
    say(
      `Stuck: ready steps no live worker can take (no active worker with a heartbeat in the last ${staleAfter} has their ability, or every tag they require): ${unmatched.reduce((n, u) => n + u.ready, 0)}`,
    );
    if (unmatched.length > 0) {
      say(
        table(
          ["ability", "tags", "why", "ready", "due", "oldest waiting"],
          unmatched.map((u) => [
            u.actionType,
            tagsLabel(u.requiredTags, false),
            WHY[u.reason],
            u.ready,
            u.due,
            duration(u.oldestWaitMs),
          ]),
          "lllrrr",
        ),
      );
      if (unmatchedSteps.length > 0) {
        say(`  the oldest (${unmatchedSteps.length}):`);
        say(
          table(
            ["job", "step", "ability", "tags", "why", "waiting"],
            unmatchedSteps.map((s) => [
              s.jobId,
              s.stepName,
              s.requiredAbility,
              tagsLabel(s.requiredTags, false),
              WHY[s.reason],
              duration(s.waitingMs),
            ]),
            "lllllr",
          ),
        );
      }
    }
  });
}

/** Why no worker takes a route's steps, in words. */
const WHY: Record<UnmatchedReason, string> = {
  ability: "no live worker has the ability",
  tags: "no live worker with the ability may take the tags",
};

/** Tags as a column: comma-separated, `-` for none; an exclusive worker's marked. */
function tagsLabel(tags: readonly string[], exclusive: boolean): string {
  const list = tags.length === 0 ? "-" : tags.join(",");
  return exclusive ? `${list} (exclusive)` : list;
}

export interface JobsOptions {
  workspace?: string;
  taskNames?: string[];
  statuses?: JobStatus[];
  sourceTypes?: SourceType[];
  text?: string;
  from?: Date;
  to?: Date;
  limit: number;
  cursor?: string;
  format: "table" | "json";
}

/** How long a job took (`ran 1.2s`), or has been running (`running 5s`); empty when it has not started. */
function jobTime(j: { startedAt: Date | null; completedAt: Date | null }, now: Date): string {
  if (!j.startedAt) return "";
  if (j.completedAt) return `ran ${duration(Math.max(0, j.completedAt.getTime() - j.startedAt.getTime()))}`;
  return `running ${age(j.startedAt, now)}`;
}

/**
 * `stroem-db jobs`: one page of `JobRepo.search`, newest first, as a table
 * (then the `--cursor` of the next page) or as JSON (`{ jobs, nextCursor }`,
 * `nextCursor` null on the last page). Only reads.
 */
export async function jobsCommand(target: Target, o: JobsOptions, say: (s: string) => void): Promise<void> {
  await withDb(target, async (db) => {
    const page = await JobRepo.search(db, {
      ...(o.workspace === undefined ? {} : { workspace: o.workspace }),
      ...(o.taskNames === undefined ? {} : { taskNames: o.taskNames }),
      ...(o.statuses === undefined ? {} : { statuses: o.statuses }),
      ...(o.sourceTypes === undefined ? {} : { sourceTypes: o.sourceTypes }),
      ...(o.text === undefined ? {} : { text: o.text }),
      ...(o.from === undefined ? {} : { createdFrom: o.from }),
      ...(o.to === undefined ? {} : { createdTo: o.to }),
      ...(o.cursor === undefined ? {} : { cursor: o.cursor }),
      limit: o.limit,
    });
    if (o.format === "json") {
      say(JSON.stringify({ jobs: page.jobs, nextCursor: page.nextCursor ?? null }, null, 2));
      return;
    }
    if (page.jobs.length === 0) {
      say(o.cursor === undefined ? "(no jobs match)" : "(no more jobs)");
      return;
    }
    const now = new Date();
    say(
      table(
        ["job", "workspace", "task", "status", "source", "created", "time"],
        page.jobs.map((j) => [
          j.jobId,
          j.workspace,
          j.taskName,
          j.status,
          j.sourceType,
          j.createdAt.toISOString(),
          jobTime(j, now),
        ]),
        "lllllll",
      ),
    );
    say(
      page.nextCursor
        ? `${page.jobs.length} jobs; next page: --cursor ${page.nextCursor}`
        : `${page.jobs.length} jobs; last page`,
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
    // The names of the workers that ran its steps (a handful): by key.
    const ids = new Set<string>();
    for (const s of steps) {
      if (s.workerId) ids.add(s.workerId);
      for (const h of s.retryHistory) if (h.workerId) ids.add(h.workerId);
    }
    const workers = new Map<string, string>();
    for (const w of await Promise.all([...ids].map((id) => WorkerRepo.get(db, id))))
      if (w) workers.set(w.workerId, w.name);
    const now = new Date();
    say(`job ${job.jobId}  ${job.workspace}/${job.taskName}  ${job.status}`);
    say(`  ${renderJobTimes(job, now)}`);
    if (job.cancelReason !== null) say(`  cancel reason: ${job.cancelReason}`);
    if (job.errorMessage !== null) say(`  error: ${job.errorMessage}`);
    const lineage = renderLineage(job);
    if (lineage) say(`  ${lineage}`);
    if (steps.length === 0) {
      say("  (no steps)");
      return;
    }
    say(renderText(steps));
    say("");
    say(renderStepTable(steps, workers, now));
    const retries = renderRetries(steps, workers);
    if (retries) {
      say("");
      say("Retries");
      say(retries);
    }
    // What the job left: its artifacts and the task or workspace state it wrote.
    const { artifacts, totalBytes } = await ArtifactRepo.list(db, jobId);
    if (artifacts.length > 0) {
      say("");
      say(`Artifacts (${artifacts.length}, ${bytes(totalBytes)})`);
      say(
        table(
          ["name", "step", "type", "size", "storage key"],
          artifacts.map((a) => [a.name, a.stepName ?? "-", a.contentType, bytes(a.sizeBytes), a.storageKey]),
          "lllrl",
        ),
      );
    }
    const states = await TaskStateRepo.byJob(db, jobId);
    if (states.length > 0) {
      say("");
      say("State written");
      say(
        table(
          ["for", "size", "json", "storage key", "written"],
          states.map((s) => [
            s.taskName === "" ? `workspace ${s.workspace}` : `task ${s.workspace}/${s.taskName}`,
            bytes(s.sizeBytes),
            s.isJson ? "yes" : "no",
            s.storageKey,
            `${age(s.createdAt, now)} ago`,
          ]),
          "lrlll",
        ),
      );
    }
  });
}

/** A size for people: B, KB, MB, GB (powers of 1,024). */
function bytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
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

/** Most step or worker lines `describeSweep` prints under a sweep's line. */
export const SWEEP_DETAIL_LINES = 20;

interface SweptStep {
  jobId: string;
  stepName: string;
  workerId?: string;
  attempts?: number;
  attempt?: number;
  outcome?: string;
}

const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

function stepLine(verb: string, s: SweptStep): string {
  const attempt = s.attempt ?? s.attempts;
  const of = [attempt === undefined ? "" : `attempt ${attempt}`, s.workerId ? `worker ${s.workerId}` : ""]
    .filter(Boolean)
    .join(", ");
  return `  ${verb} job ${s.jobId} step ${s.stepName}${of ? ` (${of})` : ""}${s.outcome ? `: ${s.outcome}` : ""}`;
}

/**
 * A sweep run that changed something: one line with the counts
 * (`rescue: requeued 2, failed 0, cancelled 0`), then a line per step, job
 * or worker it moved (`  requeued job … step … (attempt 1, worker …)`), at
 * most `SWEEP_DETAIL_LINES` of them and a count of the rest.
 */
export function describeSweep(e: SweepEvent): string {
  const r = e.result as Record<string, unknown> | undefined;
  const count = (v: unknown) => list(v).length;
  let what: string;
  const details: string[] = [];
  switch (e.sweep) {
    case "rescue":
      what = `requeued ${count(r?.requeued)}, failed ${count(r?.failed)}, cancelled ${count(r?.cancelled)}`;
      for (const verb of ["requeued", "failed", "cancelled"] as const)
        for (const s of list(r?.[verb])) details.push(stepLine(verb, s as SweptStep));
      break;
    case "timeouts":
      what = `steps timed out ${count(r?.steps)}, gates timed out ${count(r?.gates)}, jobs timed out ${count(r?.jobs)}`;
      for (const s of list(r?.steps)) details.push(stepLine("timed out", s as SweptStep));
      for (const g of list(r?.gates)) {
        const gate = g as { jobId: string; stepName: string };
        details.push(`  timed out gate ${gate.stepName} of job ${gate.jobId} (no decision)`);
      }
      for (const jobId of list(r?.jobs)) details.push(`  timed out job ${String(jobId)}`);
      break;
    case "inactive":
      what = `workers marked inactive ${count(r?.workers)}`;
      for (const w of list(r?.workers)) details.push(`  inactive worker ${String(w)}`);
      break;
    case "purge":
      what = `jobs removed ${Number(r?.jobs ?? 0)}, steps ${Number(r?.steps ?? 0)}, audit events ${Number(r?.auditEvents ?? 0)}`;
      break;
    default:
      what = `changed ${e.changed}`;
  }
  const shown = details.slice(0, SWEEP_DETAIL_LINES);
  if (details.length > shown.length) shown.push(`  … and ${details.length - shown.length} more`);
  return [`${new Date().toISOString()} ${e.sweep}: ${what} (${Math.round(e.durationMs)} ms)`, ...shown].join("\n");
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

/** Where a job came from and what retried it, in one line (empty for a job made from none). */
export function renderLineage(job: {
  sourceType: string;
  sourceId: string | null;
  sourceJobId: string | null;
  restartFromStep: string | null;
  retryOfJobId: string | null;
  retryAttempt: number;
  retryJobId: string | null;
}): string {
  // The source's id stays in source_id once the source is purged (source_job_id is then null).
  const source = job.sourceJobId ?? job.sourceId ?? "a purged job";
  const parts: string[] = [];
  if (job.sourceType === "rerun") parts.push(`rerun of ${source}`);
  if (job.sourceType === "restart") parts.push(`restarted from step ${job.restartFromStep} of ${source}`);
  if (job.sourceType === "retry") {
    parts.push(`retry ${job.retryAttempt} of ${job.retryOfJobId ?? "a purged job"} (made from ${source})`);
  }
  if (job.retryJobId !== null) parts.push(`retried by ${job.retryJobId}`);
  return parts.join("; ");
}
