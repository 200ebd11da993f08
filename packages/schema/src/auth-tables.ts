import { sql } from "drizzle-orm";
import {
  boolean,
  check,
  foreignKey,
  index,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

/**
 * Users, their links to external identity providers, refresh tokens and API
 * keys. Secrets are never stored: a refresh token or an API key is kept as
 * the SHA-256 of the whole token (lower-case hex, which a CHECK holds, so a
 * plaintext token cannot land in a hash column), a password as the slow hash
 * the server computed (argon2id, scrypt or bcrypt, in modular crypt / PHC
 * form: `$argon2id$…`, `$2b$…`). `@stroem/repos` (`UserRepo`, `ApiKeyRepo`,
 * `RefreshTokenRepo`) writes these tables.
 */

/** Length bounds the database holds for the auth tables' text columns (the repos check them first). */
export const AUTH_LIMITS = {
  /** RFC 5321's longest path; at least `a@b`. */
  emailMaxLength: 320,
  nameMaxLength: 200,
  providerIdMaxLength: 100,
  externalIdMaxLength: 512,
  passwordHashMaxLength: 1024,
  apiKeyNameMaxLength: 200,
  groupNameMaxLength: 200,
} as const;

/** Names of the auth tables' constraints the repos translate into typed errors (part of `CONSTRAINTS`). */
export const AUTH_CONSTRAINTS = {
  /** Unique index on `lower(email)`: one user per email, case-insensitively. */
  userEmailUnique: "user_email_lower_key",
  authLinkPk: "user_auth_link_user_id_provider_id_pk",
  /** One user per external identity. */
  authLinkIdentityUnique: "user_auth_link_provider_id_external_id_key",
  authLinkUserFk: "user_auth_link_user_id_user_user_id_fk",
  refreshTokenUserFk: "refresh_token_user_id_user_user_id_fk",
  apiKeyUserFk: "api_key_user_id_user_user_id_fk",
  groupMemberUserFk: "user_group_member_user_id_user_user_id_fk",
} as const;

const tz = { withTimezone: true, mode: "date" } as const;

/** `char_length(column) between 1 and max`. */
const lengthBetween = (column: unknown, min: number, max: number) =>
  sql`char_length(${column}) between ${sql.raw(String(min))} and ${sql.raw(String(max))}`;

/** A SHA-256 in lower-case hex: what every token column holds, never the token. */
const isSha256Hex = (column: unknown) => sql`${column} ~ '^[0-9a-f]{64}$'`;

export const user = pgTable(
  "user",
  {
    userId: uuid("user_id").primaryKey(),
    name: text("name"),
    /** Stored as given; unique and looked up case-insensitively (`lower(email)`). */
    email: text("email").notNull(),
    /** A slow hash computed by the server (`$argon2id$…`, `$scrypt$…`, `$2b$…`); null: no password login. */
    passwordHash: text("password_hash"),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
    /** Sees and manages everything, whatever its groups (the server's access rules decide the rest). */
    isAdmin: boolean("is_admin").notNull().default(false),
  },
  (t) => [
    check(
      "user_email_check",
      sql`${lengthBetween(t.email, 3, AUTH_LIMITS.emailMaxLength)} and ${t.email} like '%_@_%'`,
    ),
    check("user_name_check", lengthBetween(t.name, 1, AUTH_LIMITS.nameMaxLength)),
    // A hash in modular crypt / PHC form: a plaintext password does not start with `$id$`.
    check(
      "user_password_hash_check",
      sql`${lengthBetween(t.passwordHash, 1, AUTH_LIMITS.passwordHashMaxLength)} and ${t.passwordHash} ~ '^\\$[a-z0-9-]+\\$'`,
    ),
    uniqueIndex(AUTH_CONSTRAINTS.userEmailUnique).on(sql`lower(${t.email})`),
  ],
);

export const userAuthLink = pgTable(
  "user_auth_link",
  {
    userId: uuid("user_id").notNull(),
    /** The identity provider (`github`, `oidc:corp`, …). */
    providerId: text("provider_id").notNull(),
    /** The user's id at that provider (its `sub`). */
    externalId: text("external_id").notNull(),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ name: AUTH_CONSTRAINTS.authLinkPk, columns: [t.userId, t.providerId] }),
    foreignKey({ name: AUTH_CONSTRAINTS.authLinkUserFk, columns: [t.userId], foreignColumns: [user.userId] }).onDelete(
      "cascade",
    ),
    unique(AUTH_CONSTRAINTS.authLinkIdentityUnique).on(t.providerId, t.externalId),
    check("user_auth_link_provider_id_check", lengthBetween(t.providerId, 1, AUTH_LIMITS.providerIdMaxLength)),
    check("user_auth_link_external_id_check", lengthBetween(t.externalId, 1, AUTH_LIMITS.externalIdMaxLength)),
  ],
);

export const refreshToken = pgTable(
  "refresh_token",
  {
    /** SHA-256 (hex) of the token; the token itself is only ever in the caller's hands. */
    tokenHash: text("token_hash").primaryKey(),
    userId: uuid("user_id").notNull(),
    /** Every token rotated from one `issue` shares it; reuse of a retired one revokes them all. */
    familyId: uuid("family_id").notNull(),
    expiresAt: timestamp("expires_at", tz).notNull(),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
    /** Set when the token stops being usable: rotated (with `replaced_by`), or revoked. */
    revokedAt: timestamp("revoked_at", tz),
    /** The hash of the token it was rotated into: it was used once, a second use is a reuse. */
    replacedBy: text("replaced_by"),
  },
  (t) => [
    foreignKey({
      name: AUTH_CONSTRAINTS.refreshTokenUserFk,
      columns: [t.userId],
      foreignColumns: [user.userId],
    }).onDelete("cascade"),
    check("refresh_token_token_hash_check", isSha256Hex(t.tokenHash)),
    check("refresh_token_replaced_by_check", isSha256Hex(t.replacedBy)),
    // A rotated token is retired at the moment it was rotated.
    check("refresh_token_retired_check", sql`${t.replacedBy} is null or ${t.revokedAt} is not null`),
    index("idx_refresh_token_user").on(t.userId),
    index("idx_refresh_token_family").on(t.familyId),
    // purgeExpired's candidates, oldest first.
    index("idx_refresh_token_expires_at").on(t.expiresAt),
  ],
);

export const apiKey = pgTable(
  "api_key",
  {
    /** SHA-256 (hex) of the whole key; also the key's id in lists (it cannot be turned back into the key). */
    keyHash: text("key_hash").primaryKey(),
    userId: uuid("user_id").notNull(),
    name: text("name").notNull(),
    /** The key's first characters (`stroem_ak_` and 4 of its random ones), to tell keys apart in a list. */
    prefix: text("prefix").notNull(),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
    /** Null: never expires. */
    expiresAt: timestamp("expires_at", tz),
    /** Last successful `verify`, recorded at most once a minute. */
    lastUsedAt: timestamp("last_used_at", tz),
    revokedAt: timestamp("revoked_at", tz),
  },
  (t) => [
    foreignKey({ name: AUTH_CONSTRAINTS.apiKeyUserFk, columns: [t.userId], foreignColumns: [user.userId] }).onDelete(
      "cascade",
    ),
    check("api_key_key_hash_check", isSha256Hex(t.keyHash)),
    check("api_key_name_check", lengthBetween(t.name, 1, AUTH_LIMITS.apiKeyNameMaxLength)),
    // The display prefix never holds more than 4 of the key's random characters.
    check("api_key_prefix_check", sql`char_length(${t.prefix}) <= 16`),
    index("idx_api_key_user").on(t.userId),
  ],
);

/** A user row as read from the database (with its password hash: `@stroem/repos` returns users without it). */
export type User = typeof user.$inferSelect;
/** A link from a user to an identity at an external provider. */
export type UserAuthLink = typeof userAuthLink.$inferSelect;
/** A refresh token row: its hash, never the token. */
export type RefreshToken = typeof refreshToken.$inferSelect;
/** An API key row: its hash and display prefix, never the key. */
export type ApiKey = typeof apiKey.$inferSelect;

/**
 * Group membership: a user belongs to any number of groups, named freely (1
 * to 200 characters); the server's access rules say what a group may see.
 * Deleted with the user.
 */
export const userGroupMember = pgTable(
  "user_group_member",
  {
    userId: uuid("user_id").notNull(),
    groupName: text("group_name").notNull(),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.userId, t.groupName] }),
    foreignKey({
      name: AUTH_CONSTRAINTS.groupMemberUserFk,
      columns: [t.userId],
      foreignColumns: [user.userId],
    }).onDelete("cascade"),
    check("user_group_member_name_check", lengthBetween(t.groupName, 1, AUTH_LIMITS.groupNameMaxLength)),
    // listGroups and "who is in this group".
    index("idx_user_group_member_group").on(t.groupName),
  ],
);

/** A group membership row. */
export type UserGroupMember = typeof userGroupMember.$inferSelect;
