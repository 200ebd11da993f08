import { ACTION_TYPES, type Worker, worker } from "@stroem/schema";
import { desc, eq, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import { WorkerNotFoundError } from "./errors.js";
import { HEARTBEAT } from "./sql/cancel.js";
import { runStatement } from "./statement.js";
import { requireCapabilities, requireText, requireUuid } from "./validate.js";

export interface RegisterWorker {
  workerId: string;
  name: string;
  /** Action types the worker runs (`shell`, `docker`, `pod`). */
  capabilities: readonly string[];
}

/**
 * Registers a worker, or re-registers it after a restart: an existing row
 * gets the new name and capabilities, `status = 'active'` and a fresh
 * heartbeat; `registered_at` keeps the first registration.
 */
export async function register(db: Executor, input: RegisterWorker): Promise<void> {
  const workerId = requireUuid("workerId", input.workerId);
  const name = requireText("name", input.name);
  const capabilities = requireCapabilities("capabilities", input.capabilities, ACTION_TYPES);
  await translateErrors(db, () =>
    db
      .insert(worker)
      .values({ workerId, name, capabilities, status: "active", lastHeartbeat: sql`now()` })
      .onConflictDoUpdate({
        target: worker.workerId,
        set: { name, capabilities, status: "active", lastHeartbeat: sql`now()` },
      }),
  );
}

/** A running step whose cancel was requested: the worker should stop it and report `markCancelled`. */
export interface CancelRequest {
  jobId: string;
  stepName: string;
  /** The attempt the worker holds (its guard). */
  attempt: number;
  requestedAt: Date;
  /** The job's cancel reason, if one was given. */
  reason: string | null;
}

/**
 * Records that the worker is alive (`last_heartbeat = now()`) and returns the
 * running steps it holds whose cancel was requested (their job was
 * cancelled), in one statement; usually `[]`. The worker stops those and
 * reports `JobStepRepo.markCancelled` (or its outcome, which is recorded but
 * moves nothing). Throws `WorkerNotFoundError`.
 */
export async function heartbeat(db: Executor, workerId: string): Promise<CancelRequest[]> {
  requireUuid("workerId", workerId);
  const rows = await translateErrors(db, () =>
    runStatement<
      {
        job_id: string | null;
        step_name: string | null;
        attempts: number | null;
        cancel_requested_at: string | Date | null;
        cancel_reason: string | null;
      },
      { workerId: string }
    >(db, HEARTBEAT, { workerId }),
  );
  if (rows.length === 0) throw new WorkerNotFoundError(workerId);
  return rows
    .filter((r) => r.job_id !== null)
    .map((r) => ({
      jobId: r.job_id as string,
      stepName: r.step_name as string,
      attempt: Number(r.attempts),
      requestedAt: new Date(r.cancel_requested_at as string),
      reason: r.cancel_reason,
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
