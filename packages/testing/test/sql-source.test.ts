import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { dropDatabase, withClient, withDatabase } from "@stroem/embedded-pg";
import { MIGRATIONS_FOLDER, runMigrations } from "@stroem/schema";
import {
  catalogDrift,
  liveDefinitions,
  migrationTags,
  pendingStatements,
  readSqlSource,
  SQL_SOURCE_FOLDER,
  STATEMENT_BREAKPOINT,
  textDrift,
} from "@stroem/schema/sql-source";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";

// The two drift checks between packages/schema/sql/ (the one place the
// functions, triggers and table settings are edited) and the migrations
// `drizzle-kit migrate` deploys: the text check (also run by `pnpm drift`)
// and the catalog check (a migrated database against the folder applied in a
// rolled-back transaction). Each is shown failing on a hand-edited migration.

const { adminUrl, poolerUrl } = inject("stroemPg");
const databases: string[] = [];
const scratch: string[] = [];

afterAll(async () => {
  for (const name of databases) await dropDatabase(adminUrl, name);
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

/** A fresh database migrated from `folder`; returns its URL. */
async function migrated(folder: string): Promise<string> {
  const name = `stroem_sqlsrc_${Math.random().toString(36).slice(2, 10)}`;
  await withClient(adminUrl, (c) => c.query(`create database ${name}`));
  databases.push(name);
  const url = withDatabase(poolerUrl ?? adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  try {
    await runMigrations(drizzle({ client: pool }), { migrationsFolder: folder });
  } finally {
    await pool.end();
  }
  return url;
}

async function catalogProblems(url: string, sqlFolder = SQL_SOURCE_FOLDER): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await catalogDrift(client, sqlFolder);
  } finally {
    await client.end();
  }
}

/** A scratch copy of a folder (the migrations or the SQL source). */
async function copyOf(folder: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "stroem-sqlsrc-"));
  scratch.push(dir);
  await cp(folder, dir, { recursive: true });
  return dir;
}

/** Rewrites one migration (by tag) of a scratch migrations folder. */
async function editMigration(folder: string, tag: string, edit: (text: string) => string): Promise<void> {
  const file = path.join(folder, `${tag}.sql`);
  const before = await readFile(file, "utf8");
  const after = edit(before);
  expect(after).not.toBe(before);
  await writeFile(file, after);
}

/** Changes one line inside stroem_finish_step's body: a hand edit of its last definition. */
const handEdit = (text: string) =>
  text.replace(
    /(CREATE OR REPLACE FUNCTION stroem_finish_step\([\s\S]*?BEGIN\n)/,
    "$1  PERFORM 1; -- hand-edited in the migration\n",
  );

describe("SQL source folder", () => {
  it("reads every block as CREATE OR REPLACE (or a table's settings), once per object", () => {
    const blocks = readSqlSource();
    expect(blocks.length).toBeGreaterThan(20);
    expect(new Set(blocks.map((b) => b.key)).size).toBe(blocks.length);
    expect(blocks.map((b) => b.key)).toContain("function stroem_finish_step");
    expect(blocks.map((b) => b.key)).toContain("trigger job.job_deadline_insert");
    expect(blocks.map((b) => b.key)).toContain("table job_live");
    expect(blocks.map((b) => b.key)).toContain("view job_step_state");
  });

  it("the committed migrations install the folder: the text check and the generator find nothing", () => {
    expect(textDrift()).toEqual([]);
    expect(pendingStatements(SQL_SOURCE_FOLDER, MIGRATIONS_FOLDER)).toEqual([]);
  });

  it("the catalog of a migrated database is what the folder defines, with no leftover overloads", async () => {
    expect(await catalogProblems(await migrated(MIGRATIONS_FOLDER))).toEqual([]);
  });

  it("both checks fail on a hand-edited migration", async () => {
    const folder = await copyOf(MIGRATIONS_FOLDER);
    const def = liveDefinitions(folder).get("function stroem_finish_step");
    await editMigration(folder, def?.migration ?? "none", handEdit);
    expect(textDrift(SQL_SOURCE_FOLDER, folder)).toEqual([
      expect.stringMatching(/^function stroem_finish_step \(sql\/20_report\.sql\) differs from its last definition/),
    ]);
    const problems = await catalogProblems(await migrated(folder));
    expect(problems).toEqual([
      expect.stringMatching(/^function stroem_finish_step\(.*\) as installed differs from sql\//),
    ]);
  });

  it("both checks fail on a function added by hand, and the catalog check on a leftover overload", async () => {
    const folder = await copyOf(MIGRATIONS_FOLDER);
    const newest = migrationTags(folder).at(-1) ?? "none";
    await editMigration(
      folder,
      newest,
      (text) =>
        `${text.trimEnd()}\n${STATEMENT_BREAKPOINT}\nCREATE FUNCTION stroem_by_hand() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n` +
        `${STATEMENT_BREAKPOINT}\nCREATE FUNCTION stroem_decide(n integer) RETURNS text LANGUAGE sql AS $$ SELECT 'ready' $$;\n`,
    );
    const text = textDrift(SQL_SOURCE_FOLDER, folder);
    expect(text).toContain(`function stroem_by_hand (installed by ${newest}) has no block in sql/`);
    expect(text.some((p) => p.startsWith("function stroem_decide (sql/10_advance.sql) differs"))).toBe(true);
    const problems = await catalogProblems(await migrated(folder));
    expect(problems).toContain("function stroem_by_hand() is installed but has no block in sql/");
    expect(problems).toContain("function stroem_decide has 2 signatures (a leftover overload)");
  });

  it("the generator writes what the folder changed, with a DROP before a changed signature", async () => {
    const sql = await copyOf(SQL_SOURCE_FOLDER);
    const file = path.join(sql, "30_retry.sql");
    const text = await readFile(file, "utf8");
    // A body change: CREATE OR REPLACE alone.
    await writeFile(file, text.replace("One retry_history entry", "One retry_history entry (edited)"));
    expect(pendingStatements(sql, MIGRATIONS_FOLDER)).toEqual([]); // a comment above the statement is not compared
    await writeFile(file, text.replace(/SELECT jsonb_build_array/, "SELECT /* edited */ jsonb_build_array"));
    const bodyOnly = pendingStatements(sql, MIGRATIONS_FOLDER);
    expect(bodyOnly).toHaveLength(1);
    expect(bodyOnly[0]).toMatch(/CREATE OR REPLACE FUNCTION stroem_retry_entry\(/);
    // A signature change: DROP of the old signature first, then the block; applied, the catalog agrees.
    await writeFile(
      file,
      text.replace(/stroem_retry_entry\(p_attempt integer,/, "stroem_retry_entry(p_extra integer, p_attempt integer,"),
    );
    const changed = pendingStatements(sql, MIGRATIONS_FOLDER);
    expect(changed[0]).toMatch(/^DROP FUNCTION stroem_retry_entry\(p_attempt integer, p_worker_id uuid/);
    expect(changed[1]).toMatch(/CREATE OR REPLACE FUNCTION stroem_retry_entry\(p_extra integer/);
    const url = await migrated(MIGRATIONS_FOLDER);
    await withClient(url, async (c) => {
      for (const s of changed) await c.query(s);
    });
    expect(await catalogProblems(url, sql)).toEqual([]);
  });

  it("a view: a hand edit is caught by both checks; a changed one is dropped and created again", async () => {
    const folder = await copyOf(MIGRATIONS_FOLDER);
    const def = liveDefinitions(folder).get("view job_state");
    await editMigration(folder, def?.migration ?? "none", (text) =>
      text.replace("SELECT j.job_id, j.workspace,", "SELECT j.job_id, lower(j.workspace) AS workspace,"),
    );
    expect(textDrift(SQL_SOURCE_FOLDER, folder)).toEqual([
      expect.stringMatching(/^view job_state \(sql\/05_views\.sql\) differs from its last definition/),
    ]);
    expect(await catalogProblems(await migrated(folder))).toEqual(["view job_state as installed differs from sql/"]);

    // A column added: CREATE OR REPLACE VIEW could not move columns, so the generator drops it first.
    const sql = await copyOf(SQL_SOURCE_FOLDER);
    const file = path.join(sql, "05_views.sql");
    const text = await readFile(file, "utf8");
    await writeFile(file, text.replace("SELECT j.job_id, j.workspace,", "SELECT j.job_id, 1 AS extra, j.workspace,"));
    const changed = pendingStatements(sql, MIGRATIONS_FOLDER);
    expect(changed[0]).toBe("DROP VIEW IF EXISTS job_state;");
    expect(changed[1]).toMatch(/CREATE OR REPLACE VIEW job_state AS/);
    const url = await migrated(MIGRATIONS_FOLDER);
    await withClient(url, async (c) => {
      for (const s of changed) await c.query(s);
    });
    expect(await catalogProblems(url, sql)).toEqual([]);
  });
});
