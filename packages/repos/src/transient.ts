import type { Executor } from "./db.js";

/**
 * Transient errors: what retrying the same call can fix. Kept apart from the
 * statements: a report's retry wraps its one statement and knows nothing of
 * its SQL.
 */

/** SQLSTATEs worth retrying: the server going away or coming back, and a transaction the server chose to abort. */
const TRANSIENT_CODES = new Set([
  "57P01", // admin_shutdown: pg_terminate_backend, server stopping (fast)
  "57P02", // crash_shutdown: another backend crashed, the server restarts
  "57P03", // cannot_connect_now: starting up, shutting down, in recovery
  "40P01", // deadlock_detected: the transaction was rolled back
  "40001", // serialization_failure: the transaction was rolled back
]);

/** Of those, the ones that prove the statement did not commit (safe to retry even when a repeat is not idempotent). */
const ROLLED_BACK_CODES = new Set(["57P03", "40P01", "40001"]);

/** Socket errors of a lost or refused connection. */
const SOCKET_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
]);

/** node-postgres' words for a connection that died, or that the pool could not open in time. */
const LOST_MESSAGE =
  /Connection terminated|Client has encountered a connection error|Client was closed and is not queryable|timeout exceeded when trying to connect|connection timeout|Connection closed/i;
const NEVER_SENT_MESSAGE = /timeout exceeded when trying to connect/i;

function* chain(error: unknown): Generator<unknown> {
  let current = error;
  for (let depth = 0; current !== null && current !== undefined && depth < 10; depth++) {
    yield current;
    current = (current as { cause?: unknown }).cause;
  }
}

/** The SQLSTATE of a Postgres error (severity set, 5 characters), else undefined. */
function sqlState(e: unknown): string | undefined {
  const { code, severity } = (e ?? {}) as { code?: unknown; severity?: unknown };
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) && severity !== undefined ? code : undefined;
}

/**
 * Whether `error` (a typed error of this package, or what node-postgres or
 * Drizzle threw; its `cause` chain is followed) is transient: retrying the
 * same call later can succeed. True for a lost or refused connection
 * (`ECONNRESET`, `ECONNREFUSED`, "Connection terminated unexpectedly", a pool
 * that could not connect in time), the server shutting down, crashing or
 * starting (`57P01`, `57P02`, `57P03`, any `08xxx` connection exception),
 * a deadlock (`40P01`) and a serialization failure (`40001`). False for
 * everything else: bad input, constraint violations, a refused report, a
 * statement timeout (`57014`), a wrong password or a missing database.
 */
export function isTransient(error: unknown): boolean {
  for (const e of chain(error)) {
    const state = sqlState(e);
    if (state !== undefined) return TRANSIENT_CODES.has(state) || state.startsWith("08");
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && SOCKET_CODES.has(code)) return true;
  }
  for (const e of chain(error)) {
    if (e instanceof Error && LOST_MESSAGE.test(e.message)) return true;
  }
  return false;
}

/**
 * Whether `error` proves the statement did not commit: the server rolled it
 * back (`40P01`, `40001`), refused the connection (`57P03`, `ECONNREFUSED`),
 * or the pool never got a connection to send it on. A lost connection is
 * not such proof: the commit may have happened with its answer lost.
 */
export function isRolledBack(error: unknown): boolean {
  for (const e of chain(error)) {
    const state = sqlState(e);
    if (state !== undefined) return ROLLED_BACK_CODES.has(state);
    if ((e as { code?: unknown }).code === "ECONNREFUSED") return true;
  }
  for (const e of chain(error)) {
    if (e instanceof Error && NEVER_SENT_MESSAGE.test(e.message)) return true;
  }
  return false;
}

/** How a call is retried after transient errors. */
export interface RetryPolicy {
  /** Tries in all, the first included. */
  tries: number;
  /** Delay before the first retry, doubled after each, ms; a random part of up to half is taken off. */
  baseDelayMs: number;
  /** Longest delay between two tries, ms. */
  maxDelayMs: number;
}

/**
 * The reports' policy: 6 tries, 100 ms then doubling up to 2 s (about 3 s of
 * waiting at most), enough for a killed backend or a dropped connection,
 * not for a server that stays down (the caller then gets the error and
 * reports again later: a repeated guarded report is answered `repeated`).
 */
export const REPORT_RETRY: RetryPolicy = { tries: 6, baseDelayMs: 100, maxDelayMs: 2000 };

/**
 * Runs `call` and, when it throws a transient error, runs it again after a
 * short backoff, up to `policy.tries` in all; the last error is thrown as
 * is. `idempotent`: a repeat of a call that did commit is harmless (a
 * guarded report is answered `repeated`), so every transient error is
 * retried; otherwise only errors that prove nothing was committed
 * (`isRolledBack`). Never retries inside a transaction (`db` without a pool
 * of its own): the transaction is lost with its connection, its owner must
 * start it again.
 */
export async function retryTransient<T>(
  db: Executor,
  idempotent: boolean,
  call: () => Promise<T>,
  policy: RetryPolicy = REPORT_RETRY,
): Promise<T> {
  const onPool = (db as { $client?: { totalCount?: unknown } }).$client?.totalCount !== undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const retriable = idempotent ? isTransient(error) : isRolledBack(error);
      if (!onPool || !retriable || attempt >= policy.tries) throw error;
      const delay = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      await new Promise((r) => setTimeout(r, delay * (1 - Math.random() / 2)));
    }
  }
}
