import { type ApiKey, AUDIT_ACTIONS, AUTH_CONSTRAINTS, AUTH_LIMITS, apiKey } from "@stroem/schema";
import { and, desc, eq, isNull, sql } from "drizzle-orm";
import { type AuditOptions, auditEventSql } from "../audit-repo.js";
import { type Executor, transaction, translateErrors } from "../db.js";
import { ApiKeyNotFoundError, InvalidInputError, UserNotFoundError } from "../errors.js";
import { mapRow } from "../rows.js";
import { VERIFY_API_KEY } from "../sql/auth.js";
import { runStatement } from "../statement.js";
import { requireUuid } from "../validate.js";
import {
  API_KEY,
  API_KEY_DISPLAY_CHARS,
  isWellFormed,
  newSecret,
  requireBoundedText,
  requireSha256Hex,
  sha256Hex,
} from "./secrets.js";
import type { UserInfo } from "./users.js";

/**
 * An API key as stored and listed: no secret. `keyHash` (the SHA-256 of the
 * key) is its id for `revoke`: it cannot be turned back into the key, and
 * presenting it to `verify` matches nothing.
 */
export type ApiKeyInfo = ApiKey;

export interface IssuedApiKey {
  /** The key itself (`stroem_ak_…`): shown to its owner once, stored nowhere. */
  key: string;
  info: ApiKeyInfo;
}

export interface NewApiKey {
  userId: string;
  /** What the owner calls it, 1 to 200 characters. */
  name: string;
  /** When it stops working (in the future); default never. */
  expiresAt?: Date | null;
}

/**
 * Issues an API key: `stroem_ak_` and 36 random bytes (288 bits) in
 * base64url. Stores only its SHA-256 (hex) and a display prefix
 * (`stroem_ak_` and 4 random characters); the key is returned once. The
 * INSERT and its `api_key.issued` audit event (filed under the key's hash)
 * in one transaction. Throws `UserNotFoundError`, `InvalidInputError`
 * (name, a past or invalid `expiresAt`); nothing is written then.
 */
export async function issue(db: Executor, input: NewApiKey, options: AuditOptions = {}): Promise<IssuedApiKey> {
  if (typeof input !== "object" || input === null) throw new InvalidInputError("input", "must be an object");
  const userId = requireUuid("userId", input.userId);
  const name = requireBoundedText("name", input.name, AUTH_LIMITS.apiKeyNameMaxLength);
  const expiresAt = input.expiresAt ?? null;
  if (expiresAt !== null && (!(expiresAt instanceof Date) || !(expiresAt.getTime() > Date.now()))) {
    throw new InvalidInputError("expiresAt", "must be a Date in the future, or null for a key that never expires");
  }
  const key = newSecret(API_KEY);
  const prefix = key.slice(0, API_KEY.prefix.length + API_KEY_DISPLAY_CHARS);
  const keyHash = sha256Hex(key);
  // Filed under the key's hash (its primary key, as `revoke` takes it), never the key.
  const audit = auditEventSql({
    actor: options.actor,
    action: AUDIT_ACTIONS.apiKeyIssued,
    entityType: "api_key",
    entityId: keyHash,
    details: { userId, name, prefix },
  });
  // The key and its `api_key.issued` event in one transaction.
  return transaction(db, async (tx) => {
    const rows = await translateErrors(
      tx,
      () => tx.insert(apiKey).values({ keyHash, userId, name, prefix, expiresAt }).returning(),
      (e) => (e.constraint === AUTH_CONSTRAINTS.apiKeyUserFk ? new UserNotFoundError(userId, { cause: e }) : undefined),
    );
    await tx.execute(audit);
    return { key, info: rows[0] as ApiKeyInfo };
  });
}

/** What `verify` answers for a valid key. */
export interface VerifiedApiKey {
  user: UserInfo;
  key: ApiKeyInfo;
}

interface VerifyRow extends Record<string, unknown> {
  user_name: string | null;
  email: string;
  user_created_at: string | Date;
  has_password: boolean;
  is_admin: boolean;
}

/**
 * The key's owner and row if `key` is a live API key (known, not revoked,
 * not expired), else `undefined`: unknown, expired, revoked and malformed
 * keys (any non-string, empty, wrong length or prefix, quotes, `%`, NUL)
 * get the same answer, and never an exception for the input. A malformed key
 * costs no query; nothing else is written but `last_used_at`, at most once a
 * minute per key: one statement whose UPDATE is guarded by `last_used_at <=
 * now() - 1 minute` (under concurrent verifies the row lock makes the others
 * re-check the guard and skip), so a busy key does not write per request.
 */
export async function verify(db: Executor, key: unknown): Promise<VerifiedApiKey | undefined> {
  if (!isWellFormed(API_KEY, key)) return undefined;
  const rows = await translateErrors(db, () =>
    runStatement<VerifyRow, { keyHash: string }>(db, VERIFY_API_KEY, { keyHash: sha256Hex(key) }),
  );
  const row = rows[0];
  if (!row) return undefined;
  const info = mapRow(apiKey, row);
  return {
    key: info,
    user: {
      userId: info.userId,
      name: row.user_name,
      email: row.email,
      createdAt: new Date(row.user_created_at),
      hasPassword: row.has_password,
      isAdmin: row.is_admin,
    },
  };
}

/**
 * The user's API keys, newest first, revoked and expired ones included
 * (`revokedAt`, `expiresAt` say so; `activeOnly` leaves revoked ones out).
 * Never a secret: hashes and display prefixes. Throws `InvalidInputError`.
 */
export async function list(
  db: Executor,
  userId: string,
  options: { activeOnly?: boolean } = {},
): Promise<ApiKeyInfo[]> {
  requireUuid("userId", userId);
  const where = options.activeOnly
    ? and(eq(apiKey.userId, userId), isNull(apiKey.revokedAt))
    : eq(apiKey.userId, userId);
  return translateErrors(db, () =>
    db.select().from(apiKey).where(where).orderBy(desc(apiKey.createdAt), apiKey.keyHash),
  );
}

/**
 * Revokes the user's key `keyHash` (`revoked_at = now()`): `verify` refuses
 * it from then on. One guarded UPDATE and, when it revoked the key, its
 * `api_key.revoked` audit event, in one transaction (`alreadyRevoked` says
 * whether this call changed anything). Revoking twice keeps the first
 * time. Throws `ApiKeyNotFoundError` (no such key of this user), `InvalidInputError`.
 */
export async function revoke(
  db: Executor,
  userId: string,
  keyHash: string,
  options: AuditOptions = {},
): Promise<{ key: ApiKeyInfo; alreadyRevoked: boolean }> {
  requireUuid("userId", userId);
  requireSha256Hex("keyHash", keyHash);
  const audit = auditEventSql({
    actor: options.actor,
    action: AUDIT_ACTIONS.apiKeyRevoked,
    entityType: "api_key",
    entityId: keyHash,
    details: { userId },
  });
  const mine = and(eq(apiKey.keyHash, keyHash), eq(apiKey.userId, userId));
  // The revocation and its `api_key.revoked` event in one transaction; a
  // repeated revoke writes neither.
  const revoked = await transaction(db, async (tx) => {
    const rows = await translateErrors(tx, () =>
      tx
        .update(apiKey)
        .set({ revokedAt: sql`now()` })
        .where(and(mine, isNull(apiKey.revokedAt)))
        .returning(),
    );
    if (rows[0]) await tx.execute(audit);
    return rows;
  });
  if (revoked[0]) return { key: revoked[0], alreadyRevoked: false };
  const existing = await translateErrors(db, () => db.select().from(apiKey).where(mine));
  if (!existing[0]) throw new ApiKeyNotFoundError(userId, keyHash);
  return { key: existing[0], alreadyRevoked: true };
}
