import { type Column, getTableColumns, getViewSelectedFields, is, type Table, type View } from "drizzle-orm";
import { PgView } from "drizzle-orm/pg-core";

/** Each table's or view's (property, column) pairs, computed once: `mapRow` runs per claimed row. */
const columnsOf = new WeakMap<object, ReadonlyArray<readonly [string, Column]>>();

type RowOf<T> = T extends Table ? T["$inferSelect"] : T extends { $inferSelect: infer R } ? R : never;

/**
 * Maps a raw row (snake_case, driver values: timestamps as strings from
 * Drizzle's node-postgres driver) to the table's (or read view's) row type,
 * through each column's own decoder. Query-builder results are already
 * mapped; this is for the hand-written statements (the claim), so both
 * paths agree.
 */
export function mapRow<T extends Table | View>(source: T, raw: Record<string, unknown>): RowOf<T> {
  let columns = columnsOf.get(source);
  if (!columns) {
    const fields = is(source, PgView) ? getViewSelectedFields(source as View) : getTableColumns(source as Table);
    columns = Object.entries(fields) as Array<[string, Column]>;
    columnsOf.set(source, columns);
  }
  const out: Record<string, unknown> = {};
  for (const [key, column] of columns) {
    const value = raw[column.name];
    out[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value);
  }
  return out as RowOf<T>;
}
