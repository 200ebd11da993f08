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

/** A valid `Date`, or undefined when absent. */
export function optionalDate(field: string, value: unknown): Date | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new InvalidInputError(field, `must be a valid Date, got ${JSON.stringify(value)}`);
  }
  return value;
}
