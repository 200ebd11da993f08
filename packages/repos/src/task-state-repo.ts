import { RECORD_LIMITS, type TaskState, taskState } from "@stroem/schema";
import { and, desc, eq, sql } from "drizzle-orm";
import { type Executor, transaction, translateErrors } from "./db.js";
import { InvalidInputError } from "./errors.js";
import { requireInt, requireText, requireUuid } from "./validate.js";

/**
 * `TaskStateRepo`: the state a task (or a workspace) leaves for its next run,
 * as snapshots kept in object storage (the rows say where). A scope is a
 * workspace and a task; without `task`, the workspace's own state.
 */

/** Whose state: a task of a workspace, or (no `task`) the workspace itself. */
export interface StateScope {
  workspace: string;
  task?: string;
}

/** A snapshot to record. */
export interface NewTaskState extends StateScope {
  storageKey: string;
  sizeBytes: number;
  /** Whether the object holds JSON (default false). */
  isJson?: boolean;
  /** The job that wrote it. */
  jobId?: string | null;
}

/** Most snapshots `list` returns, and most `insertAndPrune` keeps. */
export const MAX_STATE_ROWS = 1000;

function scopeOf(s: StateScope, at = ""): { workspace: string; taskName: string } {
  if (typeof s !== "object" || s === null) throw new InvalidInputError(at || "scope", "must be an object");
  return {
    workspace: requireText(`${at}workspace`, s.workspace),
    taskName: s.task === undefined ? "" : requireText(`${at}task`, s.task),
  };
}

const inScope = (s: { workspace: string; taskName: string }) =>
  and(eq(taskState.workspace, s.workspace), eq(taskState.taskName, s.taskName));

/** The newest snapshot of the scope, or `undefined`: one probe of `idx_task_state_latest`, backwards. */
export async function latest(db: Executor, scope: StateScope): Promise<TaskState | undefined> {
  const s = scopeOf(scope);
  const rows = await translateErrors(db, () =>
    db.select().from(taskState).where(inScope(s)).orderBy(desc(taskState.id)).limit(1),
  );
  return rows[0];
}

/** The scope's snapshots, newest first, up to `limit` (1 to 1,000; default 100). */
export async function list(db: Executor, scope: StateScope & { limit?: number }): Promise<TaskState[]> {
  const s = scopeOf(scope);
  const limit = requireInt("limit", scope.limit ?? 100, 1, MAX_STATE_ROWS);
  return translateErrors(db, () =>
    db.select().from(taskState).where(inScope(s)).orderBy(desc(taskState.id)).limit(limit),
  );
}

/**
 * Records a snapshot and keeps only the newest `keep` (1 to 1,000) of its
 * scope, in one transaction; returns the new row's id and the storage keys
 * of the snapshots it removed (the objects the server should delete). A
 * transaction-level advisory lock per scope serialises concurrent calls, so
 * two of them keep exactly `keep` and each removed key is returned once.
 * Throws, having written nothing: `InvalidInputError`.
 */
export async function insertAndPrune(
  db: Executor,
  state: NewTaskState,
  options: { keep: number },
): Promise<{ id: number; pruned: string[] }> {
  const s = scopeOf(state);
  const storageKey = requireText("storageKey", state.storageKey);
  if (storageKey.length > RECORD_LIMITS.maxStorageKey) {
    throw new InvalidInputError("storageKey", `must be at most ${RECORD_LIMITS.maxStorageKey} characters`);
  }
  const sizeBytes = requireInt("sizeBytes", state.sizeBytes, 0, Number.MAX_SAFE_INTEGER);
  if (state.isJson !== undefined && typeof state.isJson !== "boolean") {
    throw new InvalidInputError("isJson", "must be a boolean");
  }
  const jobId = state.jobId === undefined || state.jobId === null ? null : requireUuid("jobId", state.jobId);
  const keep = requireInt("keep", options?.keep, 1, MAX_STATE_ROWS);
  return translateErrors(db, () =>
    transaction(db, async (tx) => {
      await tx.execute(
        sql`select pg_advisory_xact_lock(hashtextextended(${`task_state/${s.workspace}/${s.taskName}`}, 0))`,
      );
      const [row] = await tx
        .insert(taskState)
        .values({ ...s, storageKey, sizeBytes, isJson: state.isJson ?? false, jobId })
        .returning({ id: taskState.id });
      const { rows } = await tx.execute<{ storage_key: string }>(sql`
        delete from task_state t
        where t.id in (
          select o.id from task_state o
          where o.workspace = ${s.workspace} and o.task_name = ${s.taskName}
          order by o.id desc offset ${keep}
        )
        returning t.storage_key`);
      return { id: row?.id as number, pruned: rows.map((r) => r.storage_key) };
    }),
  );
}

/** The snapshots a job wrote, newest first (through `idx_task_state_job`). */
export async function byJob(db: Executor, jobId: string): Promise<TaskState[]> {
  requireUuid("jobId", jobId);
  return translateErrors(db, () =>
    db.select().from(taskState).where(eq(taskState.jobId, jobId)).orderBy(desc(taskState.id)).limit(MAX_STATE_ROWS),
  );
}

/** Removes every snapshot of the scope and returns their storage keys. */
export async function deleteAll(db: Executor, scope: StateScope): Promise<string[]> {
  const s = scopeOf(scope);
  const rows = await translateErrors(db, () =>
    db.delete(taskState).where(inScope(s)).returning({ storageKey: taskState.storageKey }),
  );
  return rows.map((r) => r.storageKey);
}
