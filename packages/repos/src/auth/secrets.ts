import { createHash, randomBytes } from "node:crypto";
import { AUTH_LIMITS } from "@stroem/schema";
import { InvalidInputError } from "../errors.js";

/**
 * How secrets are made, recognised and hashed. A secret is a recognisable
 * prefix plus `bytes` random bytes from the OS CSPRNG, base64url without
 * padding; only its SHA-256 (lower-case hex, of the whole string) is stored,
 * and it is looked up by that hash, so secrets are compared only through
 * their hashes (an index look-up, not a character-by-character comparison).
 */
export interface SecretKind {
  readonly prefix: string;
  readonly bytes: number;
}

/** API keys: `stroem_ak_` + 36 random bytes (288 bits, 48 characters). */
export const API_KEY: SecretKind = { prefix: "stroem_ak_", bytes: 36 };
/** Refresh tokens: `stroem_rt_` + 32 random bytes (256 bits, 43 characters). */
export const REFRESH_TOKEN: SecretKind = { prefix: "stroem_rt_", bytes: 32 };
/**
 * Random characters of an API key shown in its display prefix (24 bits): the
 * 264 bits nobody sees in a list are still more than the 256 asked for.
 */
export const API_KEY_DISPLAY_CHARS = 4;

const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** Length of a well-formed secret of this kind. */
export const secretLength = (kind: SecretKind) => kind.prefix.length + Math.ceil((kind.bytes * 8) / 6);

export function newSecret(kind: SecretKind): string {
  return kind.prefix + randomBytes(kind.bytes).toString("base64url");
}

/** SHA-256 of the whole secret, lower-case hex: what the tables hold. */
export function sha256Hex(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/**
 * Whether `value` could be a secret of this kind (a string of the exact
 * length, with the prefix, base64url after it). Anything else (another type,
 * empty, too long, quotes, `%`, NUL, SQL) is refused here, before any
 * hashing or query.
 */
export function isWellFormed(kind: SecretKind, value: unknown): value is string {
  return (
    typeof value === "string" &&
    value.length === secretLength(kind) &&
    value.startsWith(kind.prefix) &&
    BASE64URL.test(value.slice(kind.prefix.length))
  );
}

/** A SHA-256 hex (an API key's id in lists). */
export function requireSha256Hex(field: string, value: unknown): string {
  if (typeof value !== "string" || !/^[0-9a-f]{64}$/.test(value)) {
    throw new InvalidInputError(field, "must be a SHA-256 in lower-case hex (an API key's keyHash)");
  }
  return value;
}

// Control characters (NUL among them, which Postgres text refuses) and lone surrogates (not UTF-8).
const UNSTORABLE = /[\p{Cc}\p{Cs}]/u;
const EMAIL = /^[^\s@]+@[^\s@]+$/u;

/** Why `value` is not an email this layer stores, or undefined if it is one. */
export function emailProblem(value: string): string | undefined {
  if (value.length < 3 || value.length > AUTH_LIMITS.emailMaxLength) {
    return `must be 3 to ${AUTH_LIMITS.emailMaxLength} characters`;
  }
  if (UNSTORABLE.test(value)) return "must not contain control characters";
  if (!EMAIL.test(value)) return "must be local@domain, without spaces";
  return undefined;
}

export function requireEmail(field: string, value: unknown): string {
  if (typeof value !== "string") throw new InvalidInputError(field, `must be a string, got ${typeof value}`);
  const problem = emailProblem(value);
  if (problem) throw new InvalidInputError(field, problem);
  return value;
}

/** A string of 1 to `max` characters, not blank, without control characters. */
export function requireBoundedText(field: string, value: unknown, max: number): string {
  if (typeof value !== "string" || value.trim() === "") {
    throw new InvalidInputError(field, "must be a non-empty string");
  }
  if (value.length > max) throw new InvalidInputError(field, `must be at most ${max} characters`);
  if (UNSTORABLE.test(value)) throw new InvalidInputError(field, "must not contain control characters");
  return value;
}

/** Whether `value` is a string `requireBoundedText` would accept (for look-ups: anything else matches nothing). */
export function isStorableText(value: string, max: number): boolean {
  return value.trim() !== "" && value.length <= max && !UNSTORABLE.test(value);
}

const PASSWORD_HASH = /^\$[a-z0-9-]+\$[\x21-\x7e]+$/;

/**
 * A password hash in modular crypt / PHC form (`$argon2id$v=19$…`,
 * `$scrypt$…`, `$2b$12$…`), printable ASCII. The layer never sees a
 * password: this refuses one passed by mistake (it does not start `$id$`).
 */
export function requirePasswordHash(field: string, value: unknown): string {
  if (typeof value !== "string" || value.length > AUTH_LIMITS.passwordHashMaxLength || !PASSWORD_HASH.test(value)) {
    throw new InvalidInputError(
      field,
      "must be a password hash in modular crypt or PHC form ($argon2id$…, $scrypt$…, $2b$…), computed by the server",
    );
  }
  return value;
}
