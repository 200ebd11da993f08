import { InvalidInputError } from "./errors.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Input checks run before any write, so bad input changes nothing. */
export function requireUuid(field: string, value: unknown): string {
  if (typeof value !== "string" || !UUID.test(value)) {
    throw new InvalidInputError(field, `must be a UUID, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function requireText(field: string, value: unknown): string {
  if (typeof value !== "string" || value.trim() === "") {
    throw new InvalidInputError(field, `must be a non-empty string, got ${JSON.stringify(value)}`);
  }
  if (value.includes("\u0000")) throw new InvalidInputError(field, "must not contain NUL characters");
  return value;
}

export function optionalText(field: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  return requireText(field, value);
}

export function requireOneOf<T extends string>(field: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw new InvalidInputError(field, `must be one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

export function requireInt(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidInputError(field, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** JSON columns take any JSON value; `undefined` means absent (null). */
export function optionalJson(field: string, value: unknown): unknown {
  if (value === undefined || value === null) return null;
  try {
    if (JSON.stringify(value) === undefined) throw new Error("not JSON");
  } catch (error) {
    throw new InvalidInputError(field, `must be JSON-serialisable (${(error as Error).message})`);
  }
  return value;
}

export function requireCapabilities(field: string, value: unknown, allowed: readonly string[]): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new InvalidInputError(field, "must be a non-empty array of action types");
  }
  for (const c of value) requireOneOf(field, c, allowed);
  return [...new Set(value as string[])];
}

/** A boolean, or undefined when absent. */
export function optionalBoolean(field: string, value: unknown): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "boolean") throw new InvalidInputError(field, `must be a boolean, got ${JSON.stringify(value)}`);
  return value;
}

/** Most tags a worker or a step may carry. */
export const MAX_TAGS = 32;
/** Longest tag, in characters. */
export const MAX_TAG_LENGTH = 64;

/**
 * A list of tags (a worker's, a step's requirement): absent is none; each a
 * non-empty string of at most `MAX_TAG_LENGTH` characters without control
 * characters (U+001F joins a route's tags), at most `MAX_TAGS`. Duplicates
 * are dropped; the database stores them sorted (`stroem_tags`).
 */
export function optionalTags(field: string, value: unknown): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new InvalidInputError(field, "must be an array of tags");
  for (const [i, tag] of value.entries()) {
    if (typeof tag !== "string" || tag.length === 0 || tag.length > MAX_TAG_LENGTH) {
      throw new InvalidInputError(
        `${field}[${i}]`,
        `must be a non-empty string of at most ${MAX_TAG_LENGTH} characters, got ${JSON.stringify(tag)}`,
      );
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    if (/[\u0000-\u001f\u007f]/.test(tag)) {
      throw new InvalidInputError(`${field}[${i}]`, `must not contain control characters, got ${JSON.stringify(tag)}`);
    }
  }
  const tags = [...new Set(value as string[])];
  if (tags.length > MAX_TAGS)
    throw new InvalidInputError(field, `must hold at most ${MAX_TAGS} tags, got ${tags.length}`);
  return tags;
}

/** A valid `Date`, or undefined when absent. */
export function optionalDate(field: string, value: unknown): Date | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new InvalidInputError(field, `must be a valid Date, got ${JSON.stringify(value)}`);
  }
  return value;
}
