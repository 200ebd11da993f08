/**
 * Operators may keep Strøm's tables in a schema of their own (say `stroem`)
 * instead of `public`: every migration and every statement names its tables
 * unqualified, so they live in, and are found in, the first schema of the
 * connection's `search_path`. `CREATE SCHEMA` it first; then migrate and
 * connect with that search path (`createPool(url, { schema })`, or this URL
 * for `drizzle-kit migrate`). Behind a transaction pooler, which refuses
 * startup options, set it on the role instead: `ALTER ROLE … SET search_path = stroem`.
 */

/** The schema names accepted: a plain lower-case identifier, so it needs no quoting anywhere. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** The startup option that makes `schema` the connection's search path. Throws `TypeError` for a bad name. */
export function searchPathOption(schema: string): string {
  if (typeof schema !== "string" || !SCHEMA_NAME.test(schema)) {
    throw new TypeError(`schema must be a lower-case identifier (${SCHEMA_NAME}), got ${JSON.stringify(schema)}`);
  }
  return `-c search_path=${schema}`;
}

/** `url` with the startup option that makes `schema` its search path (node-postgres and libpq read `options`). */
export function withSearchPath(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set("options", searchPathOption(schema));
  return u.toString();
}
