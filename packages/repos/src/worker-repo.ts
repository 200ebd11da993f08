import { WORKER_ACTION_TYPES, type Worker, worker } from "@stroem/schema";
import { desc, eq, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import { InvalidInputError, WorkerNotFoundError } from "./errors.js";
import { HEARTBEAT } from "./sql/cancel.js";
import { runStatement } from "./statement.js";
import { maxRescuesOf } from "./steps/recovery.js";
import {
  optionalBoolean,
  optionalTags,
  requireCapabilities,
  requireInt,
  requireText,
  requireUuid,
} from "./validate.js";

export interface RegisterWorker {
  workerId: string;
  name: string;
  /** Action types the worker runs (`shell`, `docker`, `pod`). */
  capabilities: readonly string[];
  /**
   * Labels of the machine (`gpu`): it may take steps that require them.
   * Default none. Its claims should pass the same (see `ClaimRouting`).
   */
  tags?: readonly string[];
  /** Takes only steps that require every one of its tags (default false). */
  exclusive?: boolean;
}

/**
 * Registers a worker, or re-registers it after a restart: an existing row
 * gets the new name, capabilities and tags, `status = 'active'` and a fresh
 * heartbeat; `registered_at` keeps the first registration.
 */
export async function register(db: Executor, input: RegisterWorker): Promise<void> {
  const workerId = requireUuid("workerId", input.workerId);
  const name = requireText("name", input.name);
  const capabilities = requireCapabilities("capabilities", input.capabilities, WORKER_ACTION_TYPES);
  const tags = sql`stroem_tags(${sql.param(optionalTags("tags", input.tags))}::text[])`;
  const exclusive = optionalBoolean("exclusive", input.exclusive) ?? false;
  await translateErrors(db, () =>
    db
      .insert(worker)
      .values({ workerId, name, capabilities, tags, exclusive, status: "active", lastHeartbeat: sql`now()` })
      .onConflictDoUpdate({
        target: worker.workerId,
        set: { name, capabilities, tags, exclusive, status: "active", lastHeartbeat: sql`now()` },
      }),
  );
}

/**
 * A step the worker should stop: its job was cancelled (or timed out) and it
 * still runs it (`markCancelled` then), or it listed the step in `running`
 * but no longer holds it in that attempt (the step timed out, was rescued:
 * its outcome would be refused).
 */
export interface CancelRequest {
  jobId: string;
  stepName: string;
  /** The attempt the worker holds (its guard). */
  attempt: number;
  requestedAt: Date;
  /** Why: the job's cancel reason or error, or the step's failure ("timed out: …"); null if none was given. */
  reason: string | null;
}

/** A step a worker is running, as it tells `heartbeat`. */
export interface HeldStep {
  jobId: string;
  stepName: string;
  attempt: number;
}

/** Options of `heartbeat`. */
export interface HeartbeatOptions {
  /**
   * The steps the worker runs (each claim it got an answer for and has not
   * reported yet). When given, the heartbeat also returns those it no longer
   * holds, and gives back its orphaned claims (see `heartbeat`).
   */
  running?: readonly HeldStep[];
  /** The crash budget for orphaned claims, as `rescueStaleSteps`' `maxRescues` (default 3). */
  maxRescues?: number;
}

/**
 * Records that the worker is alive (`last_heartbeat = now()`, `status =
 * 'active'`) and returns, in the same statement, the steps it should stop;
 * usually `[]`: the running steps it holds whose cancel was requested (their
 * job was cancelled or timed out: stop, then report
 * `JobStepRepo.markCancelled`; a late outcome is recorded but moves nothing),
 * and, if it lists what it runs in `options.running`, those it no longer
 * holds in that attempt (timed out by `sweepTimeouts`, rescued: stop, its
 * report would be refused).
 *
 * Orphaned claims: with `options.running`, a running step the database
 * assigns to this worker that the list lacks, and that was claimed before
 * this worker's previous heartbeat, is one whose claim committed but whose
 * answer never reached the worker (the connection dropped in between). It is
 * given back as a rescue would (`rescueStaleSteps`: the crash budget
 * `maxRescues`, then the step's retry policy through the failure path; a
 * `retryHistory` entry "claim lost: …"). A claim in flight (claimed after the
 * previous heartbeat) is never taken back; list every step as soon as its
 * claim returns. A claim still unanswered a whole heartbeat interval after
 * it started may be taken back: its report is then refused, nothing is lost.
 * Without `running`, nothing is given back. Lock order: the worker row, then
 * job rows (skipping those a report holds: looked at on the next heartbeat),
 * then steps. Throws `WorkerNotFoundError`, `InvalidInputError`.
 */
export async function heartbeat(
  db: Executor,
  workerId: string,
  options: HeartbeatOptions = {},
): Promise<CancelRequest[]> {
  requireUuid("workerId", workerId);
  const release = options?.running !== undefined;
  const running = options?.running ?? [];
  if (!Array.isArray(running)) throw new InvalidInputError("options.running", "must be an array");
  const maxRescues = maxRescuesOf(options?.maxRescues, "options.maxRescues");
  const held = running.map((h, i) => {
    const at = `options.running[${i}]`;
    if (typeof h !== "object" || h === null) throw new InvalidInputError(at, "must be an object");
    return {
      job_id: requireUuid(`${at}.jobId`, h.jobId),
      step_name: requireText(`${at}.stepName`, h.stepName),
      attempt: requireInt(`${at}.attempt`, h.attempt, 1, 2 ** 31 - 1),
    };
  });
  const rows = await translateErrors(db, () =>
    runStatement<
      {
        job_id: string | null;
        step_name: string | null;
        attempts: number | null;
        cancel_requested_at: string | Date | null;
        reason: string | null;
      },
      { workerId: string; running: string; release: boolean; maxRescues: number }
    >(db, HEARTBEAT, { workerId, running: JSON.stringify(held), release, maxRescues }),
  );
  if (rows.length === 0) throw new WorkerNotFoundError(workerId);
  return rows
    .filter((r) => r.job_id !== null)
    .map((r) => ({
      jobId: r.job_id as string,
      stepName: r.step_name as string,
      attempt: Number(r.attempts),
      requestedAt: new Date(r.cancel_requested_at as string),
      reason: r.reason,
    }));
}

/** Marks a worker inactive (clean shutdown). Throws `WorkerNotFoundError`. */
export async function deactivate(db: Executor, workerId: string): Promise<void> {
  requireUuid("workerId", workerId);
  const rows = await translateErrors(db, () =>
    db
      .update(worker)
      .set({ status: "inactive" })
      .where(eq(worker.workerId, workerId))
      .returning({ id: worker.workerId }),
  );
  if (rows.length === 0) throw new WorkerNotFoundError(workerId);
}

/**
 * Marks `inactive` the active workers whose last heartbeat is older than
 * `inactiveAfterMs` (by the database's clock), or that never sent one; their
 * next heartbeat makes them active again. One statement; returns their ids.
 * What they still run is `JobStepRepo.rescueStaleSteps`' business. Throws
 * `InvalidInputError`.
 */
export async function markStaleInactive(db: Executor, options: { inactiveAfterMs: number }): Promise<string[]> {
  const ms = requireInt("inactiveAfterMs", options?.inactiveAfterMs, 1, 2 ** 31 - 1);
  const rows = await translateErrors(db, () =>
    db
      .update(worker)
      .set({ status: "inactive" })
      .where(
        sql`${worker.status} = 'active' and (${worker.lastHeartbeat} is null or ${worker.lastHeartbeat} < now() - make_interval(secs => ${ms / 1000}::double precision))`,
      )
      .returning({ id: worker.workerId }),
  );
  return rows.map((r) => r.id).sort();
}

/** The worker, or `undefined`. */
export async function get(db: Executor, workerId: string): Promise<Worker | undefined> {
  requireUuid("workerId", workerId);
  const rows = await translateErrors(db, () => db.select().from(worker).where(eq(worker.workerId, workerId)));
  return rows[0];
}

/** Every worker, most recent heartbeat first (never-seen workers last). */
export async function list(db: Executor): Promise<Worker[]> {
  return translateErrors(db, () =>
    db
      .select()
      .from(worker)
      .orderBy(sql`${worker.lastHeartbeat} desc nulls last`, desc(worker.registeredAt), worker.workerId),
  );
}
