import { randomUUID } from "node:crypto";
import { AUTH_CONSTRAINTS, refreshToken } from "@stroem/schema";
import { and, eq, inArray, isNull, lte, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "../db.js";
import { InvalidInputError, UserNotFoundError } from "../errors.js";
import { REVOKE_REUSED_FAMILY, ROTATE_REFRESH_TOKEN } from "../sql/auth.js";
import { runStatement } from "../statement.js";
import { requireInt, requireUuid } from "../validate.js";
import { isWellFormed, newSecret, REFRESH_TOKEN, sha256Hex } from "./secrets.js";

/** Default lifetime of a refresh token, from its issue or rotation: 30 days. */
export const DEFAULT_REFRESH_TTL_SECS = 30 * 86_400;
/** Longest lifetime accepted: 366 days. */
export const MAX_REFRESH_TTL_SECS = 366 * 86_400;

export interface IssuedRefreshToken {
  /** The token itself (`stroem_rt_…`): handed to the client, stored nowhere. */
  token: string;
  userId: string;
  /** Shared by every token rotated from the same `issue` (one login session). */
  familyId: string;
  expiresAt: Date;
}

const ttlOf = (options: { ttlSecs?: number } | undefined) =>
  requireInt("options.ttlSecs", options?.ttlSecs ?? DEFAULT_REFRESH_TTL_SECS, 1, MAX_REFRESH_TTL_SECS);

/**
 * Issues a refresh token in a new family (a login): `stroem_rt_` and 32
 * random bytes (256 bits) in base64url, valid `ttlSecs` (default 30 days).
 * Stores only its SHA-256 (hex). One INSERT. Throws `UserNotFoundError`,
 * `InvalidInputError`; nothing is written then.
 */
export async function issue(db: Executor, input: { userId: string; ttlSecs?: number }): Promise<IssuedRefreshToken> {
  if (typeof input !== "object" || input === null) throw new InvalidInputError("input", "must be an object");
  const userId = requireUuid("userId", input.userId);
  const ttlSecs = ttlOf(input);
  const token = newSecret(REFRESH_TOKEN);
  const rows = await translateErrors(
    db,
    () =>
      db
        .insert(refreshToken)
        .values({
          tokenHash: sha256Hex(token),
          userId,
          familyId: randomUUID(),
          expiresAt: sql`now() + make_interval(secs => ${ttlSecs}::int)`,
        })
        .returning({ familyId: refreshToken.familyId, expiresAt: refreshToken.expiresAt }),
    (e) =>
      e.constraint === AUTH_CONSTRAINTS.refreshTokenUserFk ? new UserNotFoundError(userId, { cause: e }) : undefined,
  );
  const row = rows[0] as { familyId: string; expiresAt: Date };
  return { token, userId, ...row };
}

/**
 * Uses a refresh token once: returns its successor (same family, valid
 * `ttlSecs` from now) and retires it, or `undefined` when the token is not
 * live (unknown, expired, revoked, already rotated, malformed: no exception
 * for the input; a malformed one costs no query and writes nothing).
 *
 * Presenting a token that was already rotated is reuse: a copy of it is in
 * someone else's hands (or the client raced itself), so every live token of
 * its family is revoked and the session must log in again (the OAuth 2.0
 * security BCP's refresh token rotation).
 *
 * Races: of two rotations of one token (two requests, two servers), exactly
 * one gets the successor; the other waits for the row lock, is refused by the
 * guard, and then, seeing the token rotated, revokes the family, the
 * winner's successor included. Rotation and `revoke` / `revokeAllForUser`:
 * whichever takes the row lock second finds the token retired. Runs at READ
 * COMMITTED (the default): the reuse check is a second statement, which
 * sees the winning rotation's commit. Inside a caller's transaction, a
 * rollback after a refused rotation also undoes the family's revocation:
 * call it on the pool, or commit before answering.
 */
export async function rotate(
  db: Executor,
  token: unknown,
  options: { ttlSecs?: number } = {},
): Promise<IssuedRefreshToken | undefined> {
  const ttlSecs = ttlOf(options);
  if (!isWellFormed(REFRESH_TOKEN, token)) return undefined;
  const oldHash = sha256Hex(token);
  const next = newSecret(REFRESH_TOKEN);
  const rows = await translateErrors(db, () =>
    runStatement<
      { user_id: string; family_id: string; expires_at: string | Date },
      { oldHash: string; newHash: string; ttlSecs: number }
    >(db, ROTATE_REFRESH_TOKEN, { oldHash, newHash: sha256Hex(next), ttlSecs }),
  );
  const row = rows[0];
  if (row) return { token: next, userId: row.user_id, familyId: row.family_id, expiresAt: new Date(row.expires_at) };
  await translateErrors(db, () => runStatement(db, REVOKE_REUSED_FAMILY, { tokenHash: oldHash }));
  return undefined;
}

/**
 * Revokes the token's whole family (a logout of that session): true if any
 * live token was revoked, false for an unknown, malformed or already revoked
 * one (no exception for the input).
 */
export async function revoke(db: Executor, token: unknown): Promise<boolean> {
  if (!isWellFormed(REFRESH_TOKEN, token)) return false;
  const family = db
    .select({ familyId: refreshToken.familyId })
    .from(refreshToken)
    .where(eq(refreshToken.tokenHash, sha256Hex(token)));
  const rows = await translateErrors(db, () =>
    db
      .update(refreshToken)
      .set({ revokedAt: sql`now()` })
      .where(and(inArray(refreshToken.familyId, family), isNull(refreshToken.revokedAt)))
      .returning({ tokenHash: refreshToken.tokenHash }),
  );
  return rows.length > 0;
}

/**
 * Revokes every live refresh token of the user (log out everywhere, a
 * password change): one UPDATE; returns how many were revoked (0 for an
 * unknown user). Throws `InvalidInputError`.
 */
export async function revokeAllForUser(db: Executor, userId: string): Promise<number> {
  requireUuid("userId", userId);
  const rows = await translateErrors(db, () =>
    db
      .update(refreshToken)
      .set({ revokedAt: sql`now()` })
      .where(and(eq(refreshToken.userId, userId), isNull(refreshToken.revokedAt)))
      .returning({ tokenHash: refreshToken.tokenHash }),
  );
  return rows.length;
}

/**
 * Deletes refresh tokens past their expiry, oldest first, at most `limit`
 * (default 10,000, at most 100,000) a call, through `idx_refresh_token_expires_at`;
 * returns how many. Run it periodically; call again while it returns
 * `limit`. An expired token is refused by `rotate` whether or not it was
 * purged; once purged, presenting an expired retired token is "unknown", so
 * it no longer revokes its family (it could not be used anyway).
 */
export async function purgeExpired(db: Executor, options: { limit?: number } = {}): Promise<number> {
  const limit = requireInt("options.limit", options.limit ?? 10_000, 1, 100_000);
  const expired = db
    .select({ tokenHash: refreshToken.tokenHash })
    .from(refreshToken)
    .where(lte(refreshToken.expiresAt, sql`now()`))
    .orderBy(refreshToken.expiresAt)
    .limit(limit);
  const rows = await translateErrors(db, () =>
    db
      .delete(refreshToken)
      .where(inArray(refreshToken.tokenHash, expired))
      .returning({ tokenHash: refreshToken.tokenHash }),
  );
  return rows.length;
}
