import { randomUUID } from "node:crypto";
import { AUDIT_ACTIONS, AUTH_CONSTRAINTS, AUTH_LIMITS, type UserAuthLink, user, userAuthLink } from "@stroem/schema";
import { and, asc, eq, or, sql } from "drizzle-orm";
import { type AuditOptions, auditEventSql } from "../audit-repo.js";
import { type Executor, transaction, translateErrors } from "../db.js";
import { DuplicateEmailError, IdentityLinkConflictError, InvalidInputError, UserNotFoundError } from "../errors.js";
import { requireInt, requireUuid } from "../validate.js";
import { emailProblem, isStorableText, requireBoundedText, requireEmail, requirePasswordHash } from "./secrets.js";

/**
 * A user as the repos return it: the row without its password hash (only
 * `getCredentials` and `getPasswordHash` hand that out), and whether it has one.
 */
export interface UserInfo {
  userId: string;
  name: string | null;
  email: string;
  createdAt: Date;
  /** Whether a password hash is set (false: the user logs in through a provider only). */
  hasPassword: boolean;
  /** Sees and manages everything, whatever its groups (`UserRepo.setAdmin`). */
  isAdmin: boolean;
}

export interface NewUser {
  /** Stored as given; unique case-insensitively. 3 to 320 characters, `local@domain`. */
  email: string;
  name?: string | null;
  /** A slow hash the server computed (argon2id, scrypt or bcrypt), never a password. */
  passwordHash?: string | null;
}

/** The columns of `UserInfo`, for every select and RETURNING here. */
export const userInfoColumns = {
  userId: user.userId,
  name: user.name,
  email: user.email,
  createdAt: user.createdAt,
  hasPassword: sql<boolean>`${user.passwordHash} is not null`.as("has_password"),
  isAdmin: user.isAdmin,
};

const emailKey = (email: string) => sql`lower(${user.email}) = lower(${email})`;

/**
 * Creates a user and returns it. The INSERT and its `user.created` audit
 * event (by `options.actor`) in one transaction. Throws `InvalidInputError`
 * (email, name or password hash malformed) or `DuplicateEmailError` (another user has this
 * email in any case); either way nothing is written.
 */
export async function create(db: Executor, input: NewUser, options: AuditOptions = {}): Promise<UserInfo> {
  if (typeof input !== "object" || input === null) throw new InvalidInputError("input", "must be an object");
  const email = requireEmail("email", input.email);
  const name = input.name == null ? null : requireBoundedText("name", input.name, AUTH_LIMITS.nameMaxLength);
  const passwordHash = input.passwordHash == null ? null : requirePasswordHash("passwordHash", input.passwordHash);
  const userId = randomUUID();
  const audit = auditEventSql({
    actor: options.actor,
    action: AUDIT_ACTIONS.userCreated,
    entityType: "user",
    entityId: userId,
  });
  // The user and its `user.created` event in one transaction (a savepoint
  // inside the caller's): both or neither.
  return transaction(db, async (tx) => {
    const rows = await translateErrors(
      tx,
      () => tx.insert(user).values({ userId, email, name, passwordHash }).returning(userInfoColumns),
      (e) =>
        e.constraint === AUTH_CONSTRAINTS.userEmailUnique ? new DuplicateEmailError(email, { cause: e }) : undefined,
    );
    await tx.execute(audit);
    return rows[0] as UserInfo;
  });
}

/** The user, or `undefined`. Throws `InvalidInputError` for an id that is not a UUID. */
export async function get(db: Executor, userId: string): Promise<UserInfo | undefined> {
  requireUuid("userId", userId);
  const rows = await translateErrors(db, () => db.select(userInfoColumns).from(user).where(eq(user.userId, userId)));
  return rows[0];
}

/**
 * The user with this email, compared case-insensitively (`lower(email)`, the
 * unique index; never a pattern: `%` and `_` are plain characters), or
 * `undefined`, also for a string that is no storable email (empty, too long,
 * NUL): no query then. Throws `InvalidInputError` for a non-string.
 */
export async function getByEmail(db: Executor, email: string): Promise<UserInfo | undefined> {
  if (typeof email !== "string") throw new InvalidInputError("email", `must be a string, got ${typeof email}`);
  if (emailProblem(email)) return undefined;
  const rows = await translateErrors(db, () => db.select(userInfoColumns).from(user).where(emailKey(email)));
  return rows[0];
}

/**
 * For a password login: the user with this email (as `getByEmail`) and its
 * password hash (null if it has none), or `undefined`. The caller verifies
 * the password against the hash with its slow hash function.
 */
export async function getCredentials(
  db: Executor,
  email: string,
): Promise<{ user: UserInfo; passwordHash: string | null } | undefined> {
  if (typeof email !== "string") throw new InvalidInputError("email", `must be a string, got ${typeof email}`);
  if (emailProblem(email)) return undefined;
  const rows = await translateErrors(db, () =>
    db
      .select({ ...userInfoColumns, passwordHash: user.passwordHash })
      .from(user)
      .where(emailKey(email)),
  );
  const row = rows[0];
  if (!row) return undefined;
  const { passwordHash, ...info } = row;
  return { user: info, passwordHash };
}

/** The user's password hash (null if none). Throws `UserNotFoundError`, `InvalidInputError`. */
export async function getPasswordHash(db: Executor, userId: string): Promise<string | null> {
  requireUuid("userId", userId);
  const rows = await translateErrors(db, () =>
    db.select({ passwordHash: user.passwordHash }).from(user).where(eq(user.userId, userId)),
  );
  if (!rows[0]) throw new UserNotFoundError(userId);
  return rows[0].passwordHash;
}

/**
 * Sets (or, with null, clears) the user's password hash: one UPDATE. Throws
 * `InvalidInputError` for something that is not a hash in modular crypt /
 * PHC form (a password passed by mistake), `UserNotFoundError`.
 */
export async function setPasswordHash(db: Executor, userId: string, passwordHash: string | null): Promise<void> {
  requireUuid("userId", userId);
  const hash = passwordHash === null ? null : requirePasswordHash("passwordHash", passwordHash);
  const rows = await translateErrors(db, () =>
    db.update(user).set({ passwordHash: hash }).where(eq(user.userId, userId)).returning({ id: user.userId }),
  );
  if (rows.length === 0) throw new UserNotFoundError(userId);
}

/** Users, oldest first (`created_at`, then id), `limit` (default 100, at most 1,000) from `offset`. */
export async function list(db: Executor, options: { limit?: number; offset?: number } = {}): Promise<UserInfo[]> {
  const limit = requireInt("options.limit", options.limit ?? 100, 1, 1000);
  const offset = requireInt("options.offset", options.offset ?? 0, 0, 2 ** 31 - 1);
  return translateErrors(db, () =>
    db.select(userInfoColumns).from(user).orderBy(asc(user.createdAt), asc(user.userId)).limit(limit).offset(offset),
  );
}

/**
 * Deletes the user and returns what it was; its identity links, refresh
 * tokens and API keys go with it (foreign keys `ON DELETE CASCADE`). The
 * DELETE and its `user.deleted` audit event (by `options.actor`) in one
 * transaction. Throws `UserNotFoundError`, `InvalidInputError`.
 */
async function deleteUser(db: Executor, userId: string, options: AuditOptions = {}): Promise<UserInfo> {
  requireUuid("userId", userId);
  const audit = auditEventSql({
    actor: options.actor,
    action: AUDIT_ACTIONS.userDeleted,
    entityType: "user",
    entityId: userId,
  });
  // The deletion and its `user.deleted` event in one transaction.
  return transaction(db, async (tx) => {
    const rows = await translateErrors(tx, () =>
      tx.delete(user).where(eq(user.userId, userId)).returning(userInfoColumns),
    );
    if (!rows[0]) throw new UserNotFoundError(userId);
    await tx.execute(audit);
    return rows[0];
  });
}

export { deleteUser as delete };

export interface ExternalIdentity {
  /** The identity provider (`github`, `oidc:corp`, …), 1 to 100 characters. */
  providerId: string;
  /** The user's id there (an OIDC `sub`), 1 to 512 characters, compared exactly. */
  externalId: string;
}

function requireIdentity(identity: ExternalIdentity): ExternalIdentity {
  if (typeof identity !== "object" || identity === null) throw new InvalidInputError("identity", "must be an object");
  return {
    providerId: requireBoundedText("providerId", identity.providerId, AUTH_LIMITS.providerIdMaxLength),
    externalId: requireBoundedText("externalId", identity.externalId, AUTH_LIMITS.externalIdMaxLength),
  };
}

/**
 * Links the user to an external identity. Returns true when the link was
 * made, false when exactly this link already existed (a repeated call is a
 * no-op). One INSERT ... ON CONFLICT DO NOTHING, then, only if it inserted
 * nothing, a read saying why. Throws `IdentityLinkConflictError` (the
 * identity belongs to another user, or the user has another identity at this
 * provider), `UserNotFoundError`, `InvalidInputError`; nothing is written then.
 */
export async function link(db: Executor, userId: string, identity: ExternalIdentity): Promise<boolean> {
  requireUuid("userId", userId);
  const { providerId, externalId } = requireIdentity(identity);
  // Twice at most: a conflicting link unlinked between our insert and our read is retried once.
  for (let round = 0; round < 2; round++) {
    const inserted = await translateErrors(
      db,
      () =>
        db
          .insert(userAuthLink)
          .values({ userId, providerId, externalId })
          .onConflictDoNothing()
          .returning({ userId: userAuthLink.userId }),
      (e) =>
        e.constraint === AUTH_CONSTRAINTS.authLinkUserFk ? new UserNotFoundError(userId, { cause: e }) : undefined,
    );
    if (inserted.length > 0) return true;
    const existing = await translateErrors(db, () =>
      db
        .select()
        .from(userAuthLink)
        .where(
          or(
            and(eq(userAuthLink.userId, userId), eq(userAuthLink.providerId, providerId)),
            and(eq(userAuthLink.providerId, providerId), eq(userAuthLink.externalId, externalId)),
          ),
        ),
    );
    if (existing.some((l) => l.userId === userId && l.externalId === externalId)) return false;
    if (existing.some((l) => l.userId !== userId)) {
      throw new IdentityLinkConflictError(userId, providerId, "identity-linked-to-another-user");
    }
    if (existing.length > 0) throw new IdentityLinkConflictError(userId, providerId, "user-linked-to-another-identity");
  }
  throw new IdentityLinkConflictError(userId, providerId, "identity-linked-to-another-user");
}

/** Removes the user's link to this provider; true if there was one. Throws `InvalidInputError`. */
export async function unlink(db: Executor, userId: string, providerId: string): Promise<boolean> {
  requireUuid("userId", userId);
  const provider = requireBoundedText("providerId", providerId, AUTH_LIMITS.providerIdMaxLength);
  const rows = await translateErrors(db, () =>
    db
      .delete(userAuthLink)
      .where(and(eq(userAuthLink.userId, userId), eq(userAuthLink.providerId, provider)))
      .returning({ userId: userAuthLink.userId }),
  );
  return rows.length > 0;
}

/**
 * The user linked to this external identity, or `undefined` (also for ids
 * no link could hold: empty, too long, control characters; no query then).
 * Throws `InvalidInputError` for non-strings.
 */
export async function findByExternalIdentity(db: Executor, identity: ExternalIdentity): Promise<UserInfo | undefined> {
  if (typeof identity !== "object" || identity === null) throw new InvalidInputError("identity", "must be an object");
  const { providerId, externalId } = identity;
  if (typeof providerId !== "string") throw new InvalidInputError("providerId", "must be a string");
  if (typeof externalId !== "string") throw new InvalidInputError("externalId", "must be a string");
  if (
    !isStorableText(providerId, AUTH_LIMITS.providerIdMaxLength) ||
    !isStorableText(externalId, AUTH_LIMITS.externalIdMaxLength)
  ) {
    return undefined;
  }
  const rows = await translateErrors(db, () =>
    db
      .select(userInfoColumns)
      .from(userAuthLink)
      .innerJoin(user, eq(user.userId, userAuthLink.userId))
      .where(and(eq(userAuthLink.providerId, providerId), eq(userAuthLink.externalId, externalId))),
  );
  return rows[0];
}

/** The user's identity links, by provider. Throws `InvalidInputError`. */
export async function listLinks(db: Executor, userId: string): Promise<UserAuthLink[]> {
  requireUuid("userId", userId);
  return translateErrors(db, () =>
    db.select().from(userAuthLink).where(eq(userAuthLink.userId, userId)).orderBy(asc(userAuthLink.providerId)),
  );
}
