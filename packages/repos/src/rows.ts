import { type Column, getTableColumns, type Table } from "drizzle-orm";

/** Each table's (property, column) pairs, computed once: `mapRow` runs per claimed row. */
const columnsOf = new WeakMap<Table, ReadonlyArray<readonly [string, Column]>>();

/**
 * Maps a raw row (snake_case, driver values: timestamps as strings from
 * Drizzle's node-postgres driver) to the table's row type, through each
 * column's own decoder. Query-builder results are already mapped; this is
 * for the hand-written statements (the claim), so both paths agree.
 */
export function mapRow<T extends Table>(table: T, raw: Record<string, unknown>): T["$inferSelect"] {
  let columns = columnsOf.get(table);
  if (!columns) {
    columns = Object.entries(getTableColumns(table)) as Array<[string, Column]>;
    columnsOf.set(table, columns);
  }
  const out: Record<string, unknown> = {};
  for (const [key, column] of columns) {
    const value = raw[column.name];
    out[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value);
  }
  return out as T["$inferSelect"];
}
