import { ACTION_TYPES, type Worker, worker } from "@stroem/schema";
import { desc, eq, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import { WorkerNotFoundError } from "./errors.js";
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

/** Records that the worker is alive (`last_heartbeat = now()`). Throws `WorkerNotFoundError`. */
export async function heartbeat(db: Executor, workerId: string): Promise<void> {
  requireUuid("workerId", workerId);
  const rows = await translateErrors(db, () =>
    db
      .update(worker)
      .set({ lastHeartbeat: sql`now()` })
      .where(eq(worker.workerId, workerId))
      .returning({ id: worker.workerId }),
  );
  if (rows.length === 0) throw new WorkerNotFoundError(workerId);
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
