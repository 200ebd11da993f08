import { fillPlaceholders, type SQL } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import type pg from "pg";
import type { Executor } from "./db.js";
import { STATEMENT_NAME } from "./translate-error.js";

const dialect = new PgDialect();

/**
 * A hand-written statement of the hot path, compiled once from Drizzle's
 * `sql` template with `sql.placeholder(...)` for its values: no query
 * building per call, and it runs as a named prepared statement (parsed and
 * planned once per connection) where the connection allows it.
 */
export interface Statement<V extends Record<string, unknown>> {
  readonly name: string;
  readonly text: string;
  readonly params: readonly unknown[];
  /** Phantom: the placeholder values the statement takes. */
  readonly values?: V;
}

export function statement<V extends Record<string, unknown>>(name: string, query: SQL): Statement<V> {
  const { sql: text, params } = dialect.sqlToQuery(query);
  return { name: `stroem_${name}`, text, params };
}

/**
 * Whether `client` may keep named prepared statements: a pool created with
 * `preparedStatements: false` in its node-postgres options may not (what
 * `createPool(url, { pooler: "transaction" })` sets: PgBouncer before 1.21
 * cannot route named statements in transaction mode). Statements inside a
 * transaction run unnamed: the hot paths run on the pool.
 */
function mayPrepare(client: pg.Pool | pg.PoolClient | pg.Client): boolean {
  const options = (client as { options?: { preparedStatements?: boolean } }).options;
  return "totalCount" in client && options?.preparedStatements !== false;
}

/** The node-postgres client or pool under a Drizzle database or transaction. */
function clientOf(db: Executor): pg.Pool | pg.PoolClient | pg.Client {
  // A database from `drizzle()` has `$client`; a transaction's session holds
  // its checked-out client (drizzle-orm 0.45's NodePgSession.client; every
  // repo test that runs inside a transaction goes through here).
  const own = (db as { $client?: pg.Pool | pg.Client }).$client;
  const client = own ?? (db as unknown as { session?: { client?: pg.PoolClient } }).session?.client;
  if (!client) throw new TypeError("not a Drizzle node-postgres database or transaction");
  return client;
}

/** Runs `st` with `values` on `db` (a database or a transaction) and returns the raw rows. */
export async function runStatement<R, V extends Record<string, unknown>>(
  db: Executor,
  st: Statement<V>,
  values: V,
): Promise<R[]> {
  const client = clientOf(db);
  const params = fillPlaceholders(st.params as unknown[], values);
  try {
    const result = await client.query({
      ...(mayPrepare(client) ? { name: st.name } : {}),
      text: st.text,
      values: params,
    });
    return result.rows as R[];
  } catch (error) {
    // The name, for the typed error (`StroemDbError.statement`): logs name the statement, never its text.
    if (typeof error === "object" && error !== null) (error as { [STATEMENT_NAME]?: string })[STATEMENT_NAME] = st.name;
    throw error;
  }
}
