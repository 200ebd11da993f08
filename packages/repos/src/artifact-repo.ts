import {
  CONSTRAINTS,
  type JobArtifact,
  jobArtifact,
  RECORD_LIMITS,
  type StorageDeletion,
  storageDeletion,
} from "@stroem/schema";
import { and, asc, eq, inArray, sql } from "drizzle-orm";
import { type Executor, transaction, translateErrors } from "./db.js";
import { InvalidInputError, JobNotFoundError } from "./errors.js";
import { optionalText, requireInt, requireText, requireUuid } from "./validate.js";

/**
 * `ArtifactRepo`: a job's named outputs kept in object storage (the rows
 * hold where: the storage key), and the storage keys the retention purge
 * left for the server to delete.
 */

/** An artifact to record. */
export interface NewArtifact {
  jobId: string;
  /** Unique per job (1 to 512 characters): a second upload of the name replaces the first. */
  name: string;
  /** The step that produced it, if any. */
  stepName?: string | null;
  /** Default `application/octet-stream`. */
  contentType?: string;
  sizeBytes: number;
  /** Where the object is (1 to 1,024 characters). */
  storageKey: string;
}

/** What `put` did. */
export interface PutArtifactResult {
  /** The storage key the name held before (the object the server should now delete), if it was replaced. */
  replacedStorageKey?: string;
}

function checkName(field: string, value: unknown): string {
  const name = requireText(field, value);
  if (name.length > RECORD_LIMITS.maxName) {
    throw new InvalidInputError(field, `must be at most ${RECORD_LIMITS.maxName} characters`);
  }
  return name;
}

function checkStorageKey(field: string, value: unknown): string {
  const key = requireText(field, value);
  if (key.length > RECORD_LIMITS.maxStorageKey) {
    throw new InvalidInputError(field, `must be at most ${RECORD_LIMITS.maxStorageKey} characters`);
  }
  return key;
}

/**
 * Records an artifact of a job, or replaces the one of that name, and says
 * which storage key it replaced. One transaction: a transaction-level
 * advisory lock on (job, name) serialises two uploads of one name, so each
 * replaced key is answered exactly once (to the call that replaced it).
 * Throws, having written nothing: `InvalidInputError`, `JobNotFoundError`.
 */
export async function put(db: Executor, artifact: NewArtifact): Promise<PutArtifactResult> {
  if (typeof artifact !== "object" || artifact === null) throw new InvalidInputError("artifact", "must be an object");
  const jobId = requireUuid("jobId", artifact.jobId);
  const name = checkName("name", artifact.name);
  const stepName = optionalText("stepName", artifact.stepName);
  const contentType = artifact.contentType === undefined ? null : requireText("contentType", artifact.contentType);
  const sizeBytes = requireInt("sizeBytes", artifact.sizeBytes, 0, Number.MAX_SAFE_INTEGER);
  const storageKey = checkStorageKey("storageKey", artifact.storageKey);
  return translateErrors(
    db,
    () =>
      transaction(db, async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`artifact/${jobId}/${name}`}, 0))`);
        const before = await tx
          .select({ storageKey: jobArtifact.storageKey })
          .from(jobArtifact)
          .where(and(eq(jobArtifact.jobId, jobId), eq(jobArtifact.name, name)));
        const row = { jobId, name, stepName, sizeBytes, storageKey, ...(contentType ? { contentType } : {}) };
        await tx
          .insert(jobArtifact)
          .values(row)
          .onConflictDoUpdate({
            target: [jobArtifact.jobId, jobArtifact.name],
            set: {
              stepName,
              contentType: contentType ?? "application/octet-stream",
              sizeBytes,
              storageKey,
              createdAt: sql`now()`,
            },
          });
        const replaced = before[0]?.storageKey;
        return replaced !== undefined && replaced !== storageKey ? { replacedStorageKey: replaced } : {};
      }),
    (e) => (e.constraint === CONSTRAINTS.artifactJobFk ? new JobNotFoundError(jobId, { cause: e }) : undefined),
  );
}

/** The artifact of that name, or `undefined`. */
export async function get(db: Executor, jobId: string, name: string): Promise<JobArtifact | undefined> {
  requireUuid("jobId", jobId);
  checkName("name", name);
  const rows = await translateErrors(db, () =>
    db
      .select()
      .from(jobArtifact)
      .where(and(eq(jobArtifact.jobId, jobId), eq(jobArtifact.name, name))),
  );
  return rows[0];
}

/** A job's artifacts by name, and their total size. */
export async function list(db: Executor, jobId: string): Promise<{ artifacts: JobArtifact[]; totalBytes: number }> {
  requireUuid("jobId", jobId);
  const artifacts = await translateErrors(db, () =>
    db.select().from(jobArtifact).where(eq(jobArtifact.jobId, jobId)).orderBy(asc(jobArtifact.name)),
  );
  return { artifacts, totalBytes: artifacts.reduce((sum, a) => sum + a.sizeBytes, 0) };
}

/** Total size of a job's artifacts, bytes (0 for none), in one aggregate over the job's key range. */
export async function totalSize(db: Executor, jobId: string): Promise<number> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () =>
    db
      .select({ total: sql<string>`coalesce(sum(${jobArtifact.sizeBytes}), 0)` })
      .from(jobArtifact)
      .where(eq(jobArtifact.jobId, jobId)),
  );
  return Number(rows[0]?.total ?? 0);
}

/** Removes one artifact and returns its storage key (the object to delete), or `undefined` when there was none. */
export async function remove(db: Executor, jobId: string, name: string): Promise<string | undefined> {
  requireUuid("jobId", jobId);
  checkName("name", name);
  const rows = await translateErrors(db, () =>
    db
      .delete(jobArtifact)
      .where(and(eq(jobArtifact.jobId, jobId), eq(jobArtifact.name, name)))
      .returning({ storageKey: jobArtifact.storageKey }),
  );
  return rows[0]?.storageKey;
}

/** Most rows `pendingDeletions` returns at once. */
export const MAX_DELETION_BATCH = 1000;

/**
 * Storage objects whose rows the retention purge removed, oldest first, up
 * to `limit` (1 to 1,000; default 100): delete each object, then
 * `confirmDeleted` their ids. A server that dies in between sees them again.
 */
export async function pendingDeletions(db: Executor, options: { limit?: number } = {}): Promise<StorageDeletion[]> {
  const limit = requireInt("limit", options.limit ?? 100, 1, MAX_DELETION_BATCH);
  return translateErrors(db, () => db.select().from(storageDeletion).orderBy(asc(storageDeletion.id)).limit(limit));
}

/** Forgets the given `pendingDeletions` rows (their objects are gone); returns how many it removed. */
export async function confirmDeleted(db: Executor, ids: readonly number[]): Promise<number> {
  if (!Array.isArray(ids)) throw new InvalidInputError("ids", "must be an array of ids");
  for (const [i, id] of ids.entries()) requireInt(`ids[${i}]`, id, 1, Number.MAX_SAFE_INTEGER);
  if (ids.length === 0) return 0;
  const rows = await translateErrors(db, () =>
    db
      .delete(storageDeletion)
      .where(inArray(storageDeletion.id, [...ids]))
      .returning({ id: storageDeletion.id }),
  );
  return rows.length;
}
