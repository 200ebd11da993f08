/**
 * drizzle-orm's `sql` template, typed as the copy `@stroem/repos` runs on.
 * pg-boss brings the optional peer `@opentelemetry/api` into this package,
 * so pnpm gives the bench its own instance of drizzle-orm (resolved with that
 * peer) beside the repos' one; the two declare the same classes separately,
 * and TypeScript refuses the bench's `SQL` where the repos' `execute` wants
 * theirs. At run time drizzle tells its objects apart by `entityKind` (a
 * string), so either copy's `SQL` works; only the types differ. The real fix
 * is one drizzle-orm instance in the lockfile (outside this package).
 */
import type { Database } from "@stroem/repos";
import { sql as drizzleSql } from "drizzle-orm";

/** What the repos' `db.execute` takes, other than a string. */
type RepoQuery = Exclude<Parameters<Database["execute"]>[0], string>;

export const sql = drizzleSql as unknown as {
  (strings: TemplateStringsArray, ...params: unknown[]): RepoQuery;
  /** One bound parameter (an array stays one parameter). */
  param(value: unknown): unknown;
};
