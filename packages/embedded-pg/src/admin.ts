import pg from "pg";

/** Runs `fn` on one short-lived client connected to `url`, always closing it. Throws what connecting or `fn` throws. */
export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: "stroem-admin" });
  client.on("error", () => {}); // a server going away must fail the query, not crash the process
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Postgres' `object_in_use`: the template has other sessions. */
const OBJECT_IN_USE = "55006";

/**
 * `CREATE DATABASE name TEMPLATE template`. Postgres refuses the copy while
 * another session is connected to the template (another runner finishing its
 * migration, a stray psql), so this retries that one error for up to 10
 * seconds; it throws any other error, and that one after the deadline.
 */
export async function createDatabaseFromTemplate(adminUrl: string, name: string, template: string): Promise<void> {
  await withClient(adminUrl, async (client) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await client.query(
          `create database ${client.escapeIdentifier(name)} template ${client.escapeIdentifier(template)}`,
        );
        return;
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== OBJECT_IN_USE || Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
}

/** Drops a database if it exists, disconnecting whoever is still connected (`WITH (FORCE)`). */
export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, (client) =>
    client.query(`drop database if exists ${client.escapeIdentifier(name)} with (force)`),
  );
}

/** Sessions other than the caller's connected to `database`, from `pg_stat_activity`. */
export async function countConnections(adminUrl: string, database: string): Promise<number> {
  return withClient(adminUrl, async (client) => {
    const res = await client.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
      [database],
    );
    return res.rows[0]?.n ?? 0;
  });
}

/** The connection URL with its database name replaced; throws `TypeError` for a string that is not a URL. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}
