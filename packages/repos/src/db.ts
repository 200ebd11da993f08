import * as schema from "@stroem/schema";
import { runMigrations } from "@stroem/schema";
import type { ExtractTablesWithRelations } from "drizzle-orm";
import { drizzle, type NodePgDatabase, type NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import type { PgDatabase, PgTransaction } from "drizzle-orm/pg-core";
import pg from "pg";
import { pooledClient } from "./cancel.js";
import { ConstraintViolationError, InvalidInputError } from "./errors.js";
import { type Target, translateError } from "./translate-error.js";

export type Schema = typeof schema;

/** The database `createPool` returns: Drizzle over a `pg.Pool` (`db.$client`). */
export type Database = NodePgDatabase<Schema> & { $client: pg.Pool };

/** A transaction opened with `db.transaction(...)`. */
export type Transaction = PgTransaction<NodePgQueryResultHKT, Schema, ExtractTablesWithRelations<Schema>>;

/**
 * What every repo function takes first: a database or a transaction. Any
 * Drizzle node-postgres database works, whatever schema it was built with.
 */
// biome-ignore lint/suspicious/noExplicitAny: the schema type parameter is irrelevant to these queries
export type Executor = PgDatabase<NodePgQueryResultHKT, any, any>;

export interface PoolOptions {
  /** Most connections the pool opens. Default 10. */
  max?: number;
  /**
   * Longest a statement may run, in ms; 0 disables. Default 60,000. Sent as
   * the `statement_timeout` startup parameter, or, with `pooler:
   * "transaction"`, enforced by the client (see there). Either way a statement
   * that runs too long fails with `DatabaseError` code `57014`
   * (`PG.QUERY_CANCELED`) and the connection stays usable.
   */
  statementTimeoutMs?: number;
  /**
   * `"transaction"` when `url` points at a transaction pooler (PgBouncer with
   * `pool_mode = transaction`, the way most production Postgres is reached);
   * leave unset for a direct connection or a session-mode pooler.
   *
   * Such a pooler refuses startup parameters other than a few it tracks
   * (`unsupported startup parameter: statement_timeout`), drops them silently
   * with `ignore_startup_parameters`, and hands a session `SET` on to whichever
   * client gets that server connection next. So in this mode nothing but
   * `application_name` is sent at startup, no session state is ever set, and
   * the statement timeout is kept by the client: when a statement has not
   * answered `statementTimeoutMs` after it was sent, the pool sends a cancel
   * request (which PgBouncer forwards to the server connection the client is
   * using), repeated every second until the answer comes (PgBouncer drops a
   * cancel for a client still queued for a server connection). Postgres then
   * fails the statement exactly as its own `statement_timeout` would
   * (`57014`), inside or outside a transaction, and the connection is fine.
   *
   * Why not node-postgres' `query_timeout`: it only stops waiting. The
   * statement keeps running on the server, holding its locks, and the
   * connection stays busy with it: `pool.query` then discards the connection,
   * and a transaction's ROLLBACK queues behind the statement it was meant to
   * end. Why not `SET LOCAL statement_timeout`: it would cover only statements
   * inside transactions, and cost a round trip in each. Operators should also
   * set the timeout on the server, per role (`ALTER ROLE stroem SET
   * statement_timeout = '60s'`), which every server connection the pooler
   * opens for that role applies; it then also covers a client that died.
   *
   * Everything in this package works in this mode except `listenForReady`
   * (LISTEN needs a session connection: give it a direct URL).
   */
  pooler?: "transaction" | undefined;
  /**
   * The Postgres schema the tables live in, when not `public` (a lower-case
   * identifier; `CREATE SCHEMA` it and migrate through a pool with the same
   * option). Sent as the startup option `-c search_path=<schema>`: every
   * statement names its tables unqualified. Not with `pooler` (a transaction
   * pooler refuses startup options): set the role's search path there
   * (`ALTER ROLE … SET search_path = <schema>`). A URL that has an `options`
   * parameter of its own is refused with it (`InvalidInputError`): the URL's
   * would silently win.
   */
  schema?: string | undefined;
  /**
   * A transaction left idle this long (ms; 0 disables) is ended by the
   * server: its connection is closed and its locks released, so a client
   * that hung mid-transaction cannot hold a job row for ever. Default
   * 60,000. Sent as the `idle_in_transaction_session_timeout` startup
   * parameter; with `pooler: "transaction"` (no startup parameters there) as
   * `SET LOCAL` in the same round trip as each transaction's `BEGIN`. The
   * client then sees a `ConnectionError` (SQLSTATE `25P03`) and the pool
   * drops the connection. Set PgBouncer's `idle_transaction_timeout` too.
   */
  idleInTransactionTimeoutMs?: number;
  /** How long to wait for a connection (new or from the pool) before failing, in ms. Default 10,000. */
  connectionTimeoutMs?: number;
  /** Idle connections are closed after this many ms. Default 30,000. */
  idleTimeoutMs?: number;
  /** `application_name`, shown in `pg_stat_activity`. Default "stroem". */
  applicationName?: string;
  /**
   * Called when a pooled connection fails outside a query (server restart,
   * killed backend, idle-in-transaction timeout), idle or checked out. The
   * pool drops an idle one; a checked-out one fails its next query, which
   * surfaces as a `ConnectionError`. Without a listener node-postgres would
   * crash the process. Default: ignore.
   */
  onConnectionError?: (error: Error) => void;
}

export const POOL_DEFAULTS = {
  max: 10,
  statementTimeoutMs: 60_000,
  idleInTransactionTimeoutMs: 60_000,
  connectionTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  applicationName: "stroem",
} as const;

const targets = new WeakMap<object, Target>();

/**
 * Opens a pool to `url` (`postgres://` or `postgresql://`) and returns the
 * Drizzle database over it; `db.$client` is the `pg.Pool`, end it with
 * `await db.$client.end()`. Behind a transaction pooler pass `pooler:
 * "transaction"` (see `PoolOptions.pooler`). Connections open lazily: an unreachable server
 * shows as a `ConnectionError` naming host and port on the first query,
 * after at most `connectionTimeoutMs`. Throws `InvalidInputError` for a URL
 * that is not a Postgres URL.
 */
export function createPool(url: string, options: PoolOptions = {}): Database {
  const target = parseDatabaseUrl(url);
  const o = { ...POOL_DEFAULTS, ...options };
  for (const key of [
    "max",
    "statementTimeoutMs",
    "idleInTransactionTimeoutMs",
    "connectionTimeoutMs",
    "idleTimeoutMs",
  ] as const) {
    const value = o[key];
    if (!Number.isInteger(value) || value < 0 || (key === "max" && value < 1)) {
      throw new InvalidInputError(`options.${key}`, `must be a ${key === "max" ? "positive" : "non-negative"} integer`);
    }
  }
  if (o.pooler !== undefined && o.pooler !== "transaction") {
    throw new InvalidInputError(
      "options.pooler",
      `must be "transaction" or undefined, got ${JSON.stringify(o.pooler)}`,
    );
  }
  if (o.schema !== undefined && o.pooler) {
    throw new InvalidInputError(
      "options.schema",
      "a transaction pooler refuses startup options: set the role's search_path instead (ALTER ROLE … SET search_path = …)",
    );
  }
  const searchPath = searchPathFor(url, o.schema);
  const timeout = o.statementTimeoutMs > 0 ? o.statementTimeoutMs : undefined;
  const idleInTx = o.idleInTransactionTimeoutMs > 0 ? o.idleInTransactionTimeoutMs : undefined;
  const pool = new pg.Pool({
    connectionString: url,
    max: o.max,
    connectionTimeoutMillis: o.connectionTimeoutMs,
    idleTimeoutMillis: o.idleTimeoutMs,
    application_name: o.applicationName,
    ...(searchPath ? { options: searchPath } : {}),
    ...(o.pooler
      ? timeout === undefined && idleInTx === undefined
        ? {}
        : { Client: pooledClient({ statementTimeoutMs: timeout, idleInTransactionTimeoutMs: idleInTx }) }
      : {
          ...(timeout === undefined ? {} : { statement_timeout: timeout }),
          ...(idleInTx === undefined ? {} : { idle_in_transaction_session_timeout: idleInTx }),
        }),
    // Read by `runStatement` (statement.ts): PgBouncer 1.18 cannot route named prepared statements.
    ...(o.pooler ? { preparedStatements: false } : {}),
  } as pg.PoolConfig);
  const onError = (error: Error) => options.onConnectionError?.(error);
  pool.on("error", onError);
  // The pool listens for errors only on idle clients; this covers checked-out ones.
  pool.on("connect", (client) => client.on("error", onError));
  targets.set(pool, target);
  return drizzle({ client: pool, schema }) as Database;
}

/**
 * The startup option for `options.schema` (undefined without one). The URL's
 * own `options` parameter would silently replace it (node-postgres lets the
 * connection string win), so a URL that has one together with `schema` is
 * refused: give the search path in one place. Throws `InvalidInputError`.
 */
export function searchPathFor(url: string, schemaName: string | undefined): string | undefined {
  if (schemaName === undefined) return undefined;
  let option: string;
  try {
    option = schema.searchPathOption(schemaName);
  } catch (error) {
    throw new InvalidInputError("options.schema", (error as Error).message);
  }
  const own = new URL(url).searchParams.get("options");
  if (own !== null) {
    throw new InvalidInputError(
      "options.schema",
      `the URL sets options=${JSON.stringify(own)}, which would override it: set the search path in the URL or in options.schema, not both`,
    );
  }
  return option;
}

/** Host and port of a Postgres URL; throws `InvalidInputError` for anything else. */
export function parseDatabaseUrl(url: string): Target {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidInputError("url", `not a valid database URL: "${redactUrl(url)}"`);
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    throw new InvalidInputError("url", `expected postgres:// or postgresql://, got ${parsed.protocol}//`);
  }
  const socketHost = parsed.searchParams.get("host") ?? undefined;
  return { host: parsed.hostname || socketHost || "localhost", port: Number(parsed.port || 5432) };
}

/**
 * The URL with its password masked, for logs and error messages; also for a
 * string that does not parse as a URL (the password is masked by pattern).
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return String(url).replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
  }
}

/** Verifies the server answers (one round trip); throws `ConnectionError` otherwise. */
export async function ping(db: Executor): Promise<void> {
  await translateErrors(db, async () => {
    await db.execute("select 1");
  });
}

/**
 * Runs one repo operation and translates what it throws into the typed
 * errors of `errors.ts`; `onConstraint` may name a more precise error for a
 * constraint violation (a foreign key to a missing worker, say). Every
 * exported repo function goes through here.
 */
export async function translateErrors<T>(
  db: Executor,
  fn: () => Promise<T>,
  onConstraint?: (error: ConstraintViolationError) => Error | undefined,
): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    const translated = translateError(error, targetOf(db));
    throw (translated instanceof ConstraintViolationError && onConstraint?.(translated)) || translated;
  }
}

function targetOf(db: Executor): Target {
  const client = (db as { $client?: object }).$client;
  return (client && targets.get(client)) ?? {};
}

export { runMigrations };

/**
 * Runs `fn` in a transaction on a connection of its own, like
 * `db.transaction(fn)`, but safe when the connection dies: drizzle-orm
 * 0.45's `transaction` sends BEGIN outside its try/finally, so a BEGIN that
 * fails (the connection was lost while idle in the pool, the server is
 * restarting) never gives the connection back, and a pool of `max`
 * connections is exhausted after `max` such failures. Here the connection
 * is released whatever happens, and destroyed (not returned to the pool)
 * after any failure. `tx` is a Drizzle database over that one connection.
 * On an executor without a pool of its own (a transaction), falls back to
 * `db.transaction`.
 */
export async function transaction<T>(db: Executor, fn: (tx: Executor) => Promise<T>): Promise<T> {
  const pool = (db as { $client?: pg.Pool }).$client;
  if (!pool || !("totalCount" in pool)) return db.transaction((tx) => fn(tx));
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    await client.query("begin");
    const result = await fn(drizzle({ client, schema }) as unknown as Executor);
    await client.query("commit");
    return result;
  } catch (error) {
    failure = error instanceof Error ? error : new Error(String(error));
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release(failure);
  }
}
