import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The current SQL that lives in the database (functions, triggers, table
 * settings) is kept in `packages/schema/sql/*.sql`, grouped by concern: that
 * folder is the one place it is edited. The migrations in `drizzle/` are the
 * deploy history; `pnpm db:sql --name <change>` writes the blocks that differ
 * from what the migrations install into a new drizzle-kit custom migration.
 *
 * This module reads both sides. A block is one statement of the folder,
 * separated like drizzle's migrations by `--> statement-breakpoint`, with
 * the comment lines above it (which do not reach the database and are not
 * compared). It is keyed by the object it defines:
 * - `function <name>`: `CREATE OR REPLACE FUNCTION <name>(…)` (no overloads);
 * - `trigger <table>.<name>`: `CREATE OR REPLACE TRIGGER <name> … ON <table>`;
 * - `table <name>`: `ALTER TABLE <name> SET (…)` (storage parameters);
 * - `view <name>`: `CREATE OR REPLACE VIEW <name> AS …` (the read views over
 *   the tables, `05_views.sql`).
 */

/** The source folder: `packages/schema/sql` (not shipped; read by the checks and the generator). */
export const SQL_SOURCE_FOLDER = fileURLToPath(new URL("../sql", import.meta.url));

export const STATEMENT_BREAKPOINT = "--> statement-breakpoint";

export type SqlObjectKind = "function" | "trigger" | "table" | "view";

export interface SqlBlock {
  /** `function stroem_finish_step`, `trigger job.job_deadline_insert`, `table job`, `view job_state`. */
  key: string;
  kind: SqlObjectKind;
  /** Function or trigger name, or the table of a settings block. */
  name: string;
  /** The file it came from (basename) and the order it has there. */
  file: string;
  /** The statement without the comment lines above it, lines right-trimmed. */
  statement: string;
  /** The whole block as written, comments included. */
  text: string;
}

/** What the migrations leave defined for one key: the last statement that defined it. */
export interface LiveDefinition {
  key: string;
  kind: SqlObjectKind;
  name: string;
  statement: string;
  /** The migration (tag) of that statement. */
  migration: string;
  /** A later `ALTER FUNCTION` of the object (a change the folder cannot show), if any. */
  alteredIn?: string;
}

/** Splits a migration or a source file into statements (drizzle's breakpoint). */
export function splitStatements(text: string): string[] {
  return text
    .split(STATEMENT_BREAKPOINT)
    .map((s) => s.replace(/^\s*\n/, ""))
    .filter((s) => stripComments(s) !== "");
}

/** The statement without leading blank and `--` comment lines, each line right-trimmed. */
export function stripComments(text: string): string {
  const lines = text.split("\n").map((l) => l.replace(/\s+$/, ""));
  let i = 0;
  while (i < lines.length && (lines[i] === "" || /^\s*--/.test(lines[i] ?? ""))) i++;
  return lines.slice(i).join("\n").trim();
}

const ident = String.raw`"?([A-Za-z_][\w$]*)"?`;
const CREATE_FUNCTION = new RegExp(String.raw`^CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+${ident}\s*\(`, "i");
const CREATE_TRIGGER = new RegExp(
  String.raw`^CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+${ident}[\s\S]*?\bON\s+${ident}`,
  "i",
);
const CREATE_VIEW = new RegExp(String.raw`^CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+${ident}`, "i");
const DROP_VIEW = new RegExp(String.raw`^DROP\s+VIEW\s+(?:IF\s+EXISTS\s+)?${ident}`, "i");
const ALTER_TABLE_SET = new RegExp(String.raw`^ALTER\s+TABLE\s+(?:ONLY\s+)?${ident}\s+SET\s*\(`, "i");
const ALTER_TABLE_RESET = new RegExp(String.raw`^ALTER\s+TABLE\s+(?:ONLY\s+)?${ident}\s+RESET\s*\(`, "i");
const DROP_FUNCTION = new RegExp(String.raw`^DROP\s+FUNCTION\s+(?:IF\s+EXISTS\s+)?${ident}`, "i");
const DROP_TRIGGER = new RegExp(String.raw`^DROP\s+TRIGGER\s+(?:IF\s+EXISTS\s+)?${ident}\s+ON\s+${ident}`, "i");
const ALTER_FUNCTION = new RegExp(String.raw`^ALTER\s+FUNCTION\s+${ident}`, "i");

export type Classified =
  | { action: "define"; kind: SqlObjectKind; name: string; key: string }
  | { action: "drop"; key: string }
  | { action: "alter"; key: string }
  | { action: "other" };

/** What a statement (comments stripped) does to the objects the folder keeps. */
export function classify(statement: string): Classified {
  let m = CREATE_FUNCTION.exec(statement);
  if (m) return { action: "define", kind: "function", name: m[1] as string, key: `function ${m[1]}` };
  m = CREATE_TRIGGER.exec(statement);
  if (m) return { action: "define", kind: "trigger", name: m[1] as string, key: `trigger ${m[2]}.${m[1]}` };
  m = ALTER_TABLE_SET.exec(statement);
  if (m) return { action: "define", kind: "table", name: m[1] as string, key: `table ${m[1]}` };
  m = CREATE_VIEW.exec(statement);
  if (m) return { action: "define", kind: "view", name: m[1] as string, key: `view ${m[1]}` };
  m = DROP_VIEW.exec(statement);
  if (m) return { action: "drop", key: `view ${m[1]}` };
  m = ALTER_TABLE_RESET.exec(statement);
  if (m) return { action: "drop", key: `table ${m[1]}` };
  m = DROP_FUNCTION.exec(statement);
  if (m) return { action: "drop", key: `function ${m[1]}` };
  m = DROP_TRIGGER.exec(statement);
  if (m) return { action: "drop", key: `trigger ${m[2]}.${m[1]}` };
  m = ALTER_FUNCTION.exec(statement);
  if (m) return { action: "alter", key: `function ${m[1]}` };
  return { action: "other" };
}

export class SqlSourceError extends Error {
  override name = "SqlSourceError";
}

/**
 * Reads every `*.sql` file of the folder in name order, block by block.
 * Throws `SqlSourceError` for a block that defines nothing the folder keeps,
 * one that is not written to be re-applied (`CREATE OR REPLACE`), or a key
 * defined twice.
 */
export function readSqlSource(folder: string = SQL_SOURCE_FOLDER): SqlBlock[] {
  const blocks: SqlBlock[] = [];
  const seen = new Map<string, string>();
  for (const file of readdirSync(folder)
    .filter((f) => f.endsWith(".sql"))
    .sort()) {
    for (const text of splitStatements(readFileSync(path.join(folder, file), "utf8"))) {
      const statement = stripComments(text);
      const c = classify(statement);
      const head = statement.split("\n")[0];
      if (c.action !== "define") {
        throw new SqlSourceError(
          `${file}: a block must define a function, a trigger, a view or a table's settings; found: ${head}`,
        );
      }
      if (c.kind !== "table" && !/^CREATE\s+OR\s+REPLACE\s/i.test(statement)) {
        throw new SqlSourceError(`${file}: ${c.key} must be written CREATE OR REPLACE (the folder is re-applied)`);
      }
      const before = seen.get(c.key);
      if (before) throw new SqlSourceError(`${file}: ${c.key} is defined twice (also in ${before})`);
      seen.set(c.key, file);
      blocks.push({ key: c.key, kind: c.kind, name: c.name, file, statement, text: text.trim() });
    }
  }
  return blocks;
}

/** The migrations' tags in journal order. */
export function migrationTags(migrationsFolder: string): string[] {
  const journal = JSON.parse(readFileSync(path.join(migrationsFolder, "meta/_journal.json"), "utf8")) as {
    entries: { tag: string }[];
  };
  return journal.entries.map((e) => e.tag);
}

/**
 * Replays the migrations' statements in journal order and returns, per key,
 * the last statement that defined the object and is still in force (a DROP
 * removes it; an `ALTER FUNCTION` after it is recorded as `alteredIn`).
 * With `upTo`, only the migrations before that tag.
 */
export function liveDefinitions(
  migrationsFolder: string,
  options: { upTo?: string } = {},
): Map<string, LiveDefinition> {
  const live = new Map<string, LiveDefinition>();
  const tags = migrationTags(migrationsFolder);
  const end = options.upTo === undefined ? tags.length : tags.indexOf(options.upTo);
  for (const tag of tags.slice(0, end)) {
    const text = readFileSync(path.join(migrationsFolder, `${tag}.sql`), "utf8");
    for (const chunk of splitStatements(text)) {
      const statement = stripComments(chunk);
      const c = classify(statement);
      if (c.action === "define") {
        live.set(c.key, { key: c.key, kind: c.kind, name: c.name, statement, migration: tag });
      } else if (c.action === "drop") {
        live.delete(c.key);
      } else if (c.action === "alter") {
        const def = live.get(c.key);
        if (def) def.alteredIn = tag;
      }
    }
  }
  return live;
}

/**
 * The text drift check: for each block, the migrations' last definition of
 * its object must be the block's statement, letter for letter (comments above
 * it aside), and not altered afterwards; and every object the migrations
 * leave defined must have a block. Returns the problems, one line each
 * (empty when the two agree).
 */
export function textDrift(
  sqlFolder: string = SQL_SOURCE_FOLDER,
  migrationsFolder: string = fileURLToPath(new URL("../drizzle", import.meta.url)),
): string[] {
  const blocks = readSqlSource(sqlFolder);
  const live = liveDefinitions(migrationsFolder);
  const problems: string[] = [];
  for (const block of blocks) {
    const def = live.get(block.key);
    if (!def) problems.push(`${block.key} (sql/${block.file}) is not installed by any migration`);
    else if (def.statement !== block.statement)
      problems.push(`${block.key} (sql/${block.file}) differs from its last definition, in ${def.migration}`);
    else if (def.alteredIn)
      problems.push(`${block.key} is altered by ${def.alteredIn} after its definition in ${def.migration}`);
  }
  const keys = new Set(blocks.map((b) => b.key));
  for (const def of live.values()) {
    if (!keys.has(def.key)) problems.push(`${def.key} (installed by ${def.migration}) has no block in sql/`);
  }
  return problems;
}

/** The text between the function's name and its body: `(args) RETURNS … LANGUAGE …`, arguments and result only. */
function functionSignature(statement: string): { args: string; returns: string } {
  const open = statement.indexOf("(");
  let depth = 0;
  let close = open;
  for (let i = open; i < statement.length; i++) {
    if (statement[i] === "(") depth++;
    else if (statement[i] === ")" && --depth === 0) {
      close = i;
      break;
    }
  }
  const args = statement.slice(open + 1, close);
  const after = statement.slice(close + 1);
  const returns =
    /^\s*RETURNS\s+([\s\S]*?)(?=\s(?:LANGUAGE|AS|SET|STABLE|IMMUTABLE|VOLATILE|STRICT|PARALLEL|SECURITY|COST|ROWS)\b|\s*\$)/i.exec(
      after,
    );
  const norm = (s: string) => s.replace(/\s+/g, " ").trim().toLowerCase();
  return { args: norm(args), returns: norm(returns?.[1] ?? "") };
}

/** `DROP FUNCTION name(args)` for a definition: argument modes, names and types, defaults removed. */
export function dropFunctionStatement(def: { name: string; statement: string }): string {
  const { args } = functionSignature(def.statement);
  const list = args
    .split(/,(?![^(]*\))/)
    .map((a) =>
      a
        .replace(/\s+default\s+[\s\S]*$/i, "")
        .replace(/\s*=\s*[\s\S]*$/, "")
        .trim(),
    )
    .filter((a) => a !== "");
  return `DROP FUNCTION ${def.name}(${list.join(", ")});`;
}

/**
 * What a new migration must run so the database matches the folder: the
 * blocks that differ from (or are missing in) the migrations, in folder
 * order, each preceded by a DROP when its arguments or result type changed
 * (CREATE OR REPLACE cannot change them; it would add an overload); then a
 * DROP for each object the migrations define that the folder no longer has.
 * A changed view is dropped and created again (`CREATE OR REPLACE VIEW` can
 * only append columns), so a view's readers are never a view.
 * With `upTo`, against the migrations before that tag (to rewrite it).
 */
export function pendingStatements(
  sqlFolder: string,
  migrationsFolder: string,
  options: { upTo?: string } = {},
): string[] {
  const blocks = readSqlSource(sqlFolder);
  const live = liveDefinitions(migrationsFolder, options);
  const out: string[] = [];
  for (const block of blocks) {
    const def = live.get(block.key);
    if (def && def.statement === block.statement && !def.alteredIn) continue;
    if (def && block.kind === "function") {
      const a = functionSignature(def.statement);
      const b = functionSignature(block.statement);
      if (a.args !== b.args || a.returns !== b.returns) out.push(dropFunctionStatement(def));
    }
    if (def && block.kind === "view") out.push(`DROP VIEW IF EXISTS ${def.name};`);
    out.push(block.text);
  }
  const keys = new Set(blocks.map((b) => b.key));
  for (const def of live.values()) {
    if (keys.has(def.key)) continue;
    if (def.kind === "function") out.push(dropFunctionStatement(def));
    else if (def.kind === "trigger") {
      const [table, name] = def.key.slice("trigger ".length).split(".");
      out.push(`DROP TRIGGER ${name} ON ${table};`);
    } else if (def.kind === "view") out.push(`DROP VIEW IF EXISTS ${def.name};`);
    else out.push(`ALTER TABLE ${def.name} RESET (fillfactor);`);
  }
  return out;
}

/** Something that runs a query: a pg `Client` or `PoolClient` (one connection: the check runs a transaction). */
export interface QueryClient {
  query<R extends Record<string, unknown> = Record<string, unknown>>(text: string): Promise<{ rows: R[] }>;
}

/**
 * What the database holds in the current schema of the connection: each
 * function's `pg_get_functiondef` by signature, each trigger's
 * `pg_get_triggerdef` by table and name, each table's storage parameters,
 * each view's `pg_get_viewdef`.
 */
export async function catalogSnapshot(client: QueryClient): Promise<Map<string, string>> {
  const snapshot = new Map<string, string>();
  const functions = await client.query<{ sig: string; def: string }>(
    `select p.oid::regprocedure::text as sig, pg_get_functiondef(p.oid) as def
     from pg_proc p where p.pronamespace = current_schema()::regnamespace and p.prokind = 'f'`,
  );
  for (const r of functions.rows) snapshot.set(`function ${r.sig}`, r.def);
  const triggers = await client.query<{ tbl: string; name: string; def: string }>(
    `select c.relname as tbl, t.tgname as name, pg_get_triggerdef(t.oid) as def
     from pg_trigger t join pg_class c on c.oid = t.tgrelid
     where c.relnamespace = current_schema()::regnamespace and not t.tgisinternal`,
  );
  for (const r of triggers.rows) snapshot.set(`trigger ${r.tbl}.${r.name}`, r.def);
  const tables = await client.query<{ name: string; options: string | null }>(
    `select c.relname as name, array_to_string(c.reloptions, ',') as options
     from pg_class c where c.relnamespace = current_schema()::regnamespace and c.relkind in ('r', 'p')`,
  );
  for (const r of tables.rows) if (r.options) snapshot.set(`table ${r.name}`, r.options);
  const views = await client.query<{ name: string; def: string }>(
    `select c.relname as name, pg_get_viewdef(c.oid) as def
     from pg_class c where c.relnamespace = current_schema()::regnamespace and c.relkind = 'v'`,
  );
  for (const r of views.rows) snapshot.set(`view ${r.name}`, r.def);
  return snapshot;
}

/**
 * The catalog drift check, on a migrated database (the connection's current
 * schema): snapshots the catalog, applies every block of the folder in a
 * transaction it rolls back, snapshots again, and reports each object whose
 * definition the folder would change (or add), each function, trigger or
 * table setting without a block, and each function name with more than one
 * signature (a leftover overload). Empty when the migrations installed
 * exactly the folder. Changes nothing.
 */
export async function catalogDrift(client: QueryClient, sqlFolder: string = SQL_SOURCE_FOLDER): Promise<string[]> {
  const blocks = readSqlSource(sqlFolder);
  const before = await catalogSnapshot(client);
  let after: Map<string, string>;
  await client.query("begin");
  try {
    for (const block of blocks) await client.query(block.statement);
    after = await catalogSnapshot(client);
  } finally {
    await client.query("rollback");
  }
  const problems: string[] = [];
  for (const key of new Set([...before.keys(), ...after.keys()])) {
    if (!before.has(key)) problems.push(`${key} is defined by sql/ but not installed by the migrations`);
    else if (before.get(key) !== after.get(key)) problems.push(`${key} as installed differs from sql/`);
  }
  const blockKeys = new Set(blocks.map((b) => b.key));
  const names = new Map<string, number>();
  for (const key of before.keys()) {
    const objectKey = key.startsWith("function ") ? key.replace(/\(.*$/, "") : key;
    if (key.startsWith("function ")) names.set(objectKey, (names.get(objectKey) ?? 0) + 1);
    if (!blockKeys.has(objectKey)) problems.push(`${key} is installed but has no block in sql/`);
  }
  for (const [name, n] of names) if (n > 1) problems.push(`${name} has ${n} signatures (a leftover overload)`);
  return problems;
}
