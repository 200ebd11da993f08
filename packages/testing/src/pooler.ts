import { withClient, withDatabase } from "@stroem/embedded-pg";
import { type ServerKind, ServerSelectionError } from "./select.js";

/**
 * Names a transaction pooler (PgBouncer) in front of the test server. When
 * set, each test file's database is reached through it (`useTestDb().url`,
 * `.db`, `openPool`), while admin work (the template, CREATE/DROP DATABASE,
 * the leak check's `pg_stat_activity`) stays on the direct server URL: the
 * pooler keeps server connections open, and Postgres refuses to copy a
 * template that has any.
 */
export const POOLER_VARIABLE = "STROEM_TEST_POOLER_URL";

/**
 * The pooler URL from `env`, or undefined. Only an existing server (`url`)
 * can have a pooler in front of it, so any other kind is an error, as is a
 * value that is not a postgres URL.
 */
export function poolerUrlFrom(env: Readonly<Record<string, string | undefined>>, kind: ServerKind): string | undefined {
  const value = env[POOLER_VARIABLE]?.trim();
  if (!value) return undefined;
  if (kind !== "url") {
    throw new ServerSelectionError(
      `${POOLER_VARIABLE} needs STROEM_TEST_DATABASE_URL to name the server the pooler fronts (the server is ${kind})`,
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ServerSelectionError(`${POOLER_VARIABLE} is not a URL`);
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    throw new ServerSelectionError(`${POOLER_VARIABLE} must be a postgres:// URL (got ${parsed.protocol}//)`);
  }
  return value;
}

/**
 * Client connections the pooler holds for `database`, from PgBouncer's admin
 * console (`SHOW CLIENTS` on its virtual database `pgbouncer`; the URL's user
 * must be in `admin_users` or `stats_users`). Through a pooler this, not
 * `pg_stat_activity`, is what shows a leaked pool: the server connections
 * behind it stay open by design.
 */
export async function countPoolerClients(poolerUrl: string, database: string): Promise<number> {
  return withClient(withDatabase(poolerUrl, "pgbouncer"), async (client) => {
    const res = await client.query<{ database: string }>("SHOW CLIENTS");
    return res.rows.filter((r) => r.database === database).length;
  });
}
