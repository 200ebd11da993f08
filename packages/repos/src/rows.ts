import { getTableColumns, type Table } from "drizzle-orm";

/**
 * Maps a raw row (snake_case, driver values: timestamps as strings from
 * Drizzle's node-postgres driver) to the table's row type, through each
 * column's own decoder. Query-builder results are already mapped; this is
 * for the hand-written statements (the claim), so both paths agree.
 */
export function mapRow<T extends Table>(table: T, raw: Record<string, unknown>): T["$inferSelect"] {
  const out: Record<string, unknown> = {};
  for (const [key, column] of Object.entries(getTableColumns(table))) {
    const value = raw[column.name];
    out[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value);
  }
  return out as T["$inferSelect"];
}
