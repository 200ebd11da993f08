import { execFile } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { dropDatabase, withClient, withDatabase } from "@stroem/embedded-pg";
import { MIGRATIONS_FOLDER, MIGRATIONS_SCHEMA, MIGRATIONS_TABLE, runMigrations, withSearchPath } from "@stroem/schema";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";

const ROOT = path.resolve(fileURLToPath(new URL(".", import.meta.url)), "../../..");
const { adminUrl, poolerUrl } = inject("stroemPg");
const created: string[] = [];

/**
 * A new empty database; its URL goes through the transaction pooler when the run has one
 * (STROEM_TEST_POOLER_URL), so every migration below runs through it there.
 */
async function emptyDatabase(): Promise<string> {
  const name = `stroem_mig_${Math.random().toString(36).slice(2, 10)}`;
  await withClient(adminUrl, (c) => c.query(`create database ${name}`));
  created.push(name);
  return withDatabase(poolerUrl ?? adminUrl, name);
}

afterAll(async () => {
  for (const name of created) await dropDatabase(adminUrl, name);
});

/** Columns, constraints and indexes of a schema (default `public`), in a comparable form. */
async function describeSchema(url: string, schema = "public") {
  return withClient(url, async (c) => {
    const columns = await c.query(
      `select table_name, column_name, data_type, udt_name, column_default, is_nullable
       from information_schema.columns where table_schema = $1 order by table_name, ordinal_position`,
      [schema],
    );
    const constraints = await c.query(
      `select conrelid::regclass::text as tbl, conname, pg_get_constraintdef(oid) as def
       from pg_constraint where connamespace = $1::regnamespace order by 1, 2`,
      [schema],
    );
    const indexes = await c.query(
      `select tablename, indexname, indexdef from pg_indexes where schemaname = $1 order by 1, 2`,
      [schema],
    );
    const applied = await c.query(`select hash, created_at from ${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE} order by id`);
    return { columns: columns.rows, constraints: constraints.rows, indexes: indexes.rows, applied: applied.rows };
  });
}

async function migrate(url: string) {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  try {
    return await runMigrations(drizzle({ client: pool }));
  } finally {
    await pool.end();
  }
}

describe("runMigrations", () => {
  it("applies every migration to an empty database, and a second run is a no-op", async () => {
    const url = await emptyDatabase();
    const first = await migrate(url);
    expect(first.applied).toEqual(first.all);
    expect(first.all.length).toBeGreaterThan(0);
    const before = await describeSchema(url);
    expect(before.columns.map((c) => c.table_name)).toContain("job_step");
    const second = await migrate(url);
    expect(second.applied).toEqual([]);
    expect(await describeSchema(url)).toEqual(before);
  });

  it("ten concurrent calls on one empty database all succeed, and exactly one applies", async () => {
    const url = await emptyDatabase();
    const pools = Array.from({ length: 10 }, () => new pg.Pool({ connectionString: url, max: 1 }));
    try {
      const results = await Promise.all(pools.map((p) => runMigrations(drizzle({ client: p }))));
      const appliers = results.filter((r) => r.applied.length > 0);
      expect(appliers).toHaveLength(1);
      const { applied } = await describeSchema(url);
      expect(applied).toHaveLength(results[0]?.all.length ?? -1);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it("a failing migration leaves nothing applied and no lock held: the next run applies everything", async () => {
    const url = await emptyDatabase();
    const folder = await mkdtemp(path.join(tmpdir(), "stroem-mig-"));
    try {
      await cp(MIGRATIONS_FOLDER, folder, { recursive: true });
      const journalPath = path.join(folder, "meta/_journal.json");
      const journal = JSON.parse(await readFile(journalPath, "utf8"));
      const last = journal.entries.at(-1);
      journal.entries.push({ ...last, idx: last.idx + 1, when: last.when + 1, tag: "9999_broken" });
      await writeFile(journalPath, JSON.stringify(journal));
      await writeFile(path.join(folder, "9999_broken.sql"), "select 1 / 0;");
      const pool = new pg.Pool({ connectionString: url, max: 1 });
      try {
        const error = await runMigrations(drizzle({ client: pool }), { migrationsFolder: folder }).catch((e) => e);
        expect((error as Error).cause).toMatchObject({ message: "division by zero" });
      } finally {
        await pool.end();
      }
      // One transaction: the good migrations before the broken one were rolled back with it.
      const tables = await withClient(url, (c) =>
        c.query("select 1 from information_schema.tables where table_schema = 'public'"),
      );
      expect(tables.rows).toEqual([]);
      // Returns at once: nothing was left holding the lock (a session lock through a pooler would be).
      const result = await migrate(url);
      expect(result.applied).toEqual(result.all);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it.skipIf(poolerUrl)(
    "a BEGIN on a dead connection fails, and the connection goes back destroyed, not leaked",
    async () => {
      const url = await emptyDatabase();
      let armed = true;
      // A client whose socket dies just as BEGIN is sent: a connection lost while idle in the pool.
      class Dying extends pg.Client {
        // biome-ignore lint/suspicious/noExplicitAny: wraps every overload of query()
        override query(...args: any[]): any {
          const text = typeof args[0] === "string" ? args[0] : args[0]?.text;
          if (armed && text === "begin") {
            armed = false;
            (this as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
          }
          // biome-ignore lint/suspicious/noExplicitAny: as above
          return (super.query as any)(...args);
        }
      }
      const pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 2000, Client: Dying });
      pool.on("error", () => {});
      pool.on("connect", (client) => client.on("error", () => {}));
      try {
        await expect(runMigrations(drizzle({ client: pool }))).rejects.toThrow();
        // The pool of one is not exhausted: the next run gets a fresh connection and applies everything.
        const second = await runMigrations(drizzle({ client: pool }));
        expect(second.applied).toEqual(second.all);
      } finally {
        await pool.end();
      }
    },
  );

  it("drizzle-kit migrate gives the same schema as runMigrations, and each is up to date for the other", async () => {
    const viaKit = await emptyDatabase();
    const viaRun = await emptyDatabase();
    await promisify(execFile)("pnpm", ["exec", "drizzle-kit", "migrate"], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: viaKit },
    });
    await migrate(viaRun);
    const kit = await describeSchema(viaKit);
    const mine = await describeSchema(viaRun);
    expect(kit.columns).toEqual(mine.columns);
    expect(kit.constraints).toEqual(mine.constraints);
    expect(kit.indexes).toEqual(mine.indexes);
    expect(kit.applied).toEqual(mine.applied);
    // runMigrations finds nothing to do on drizzle-kit's database...
    expect((await migrate(viaKit)).applied).toEqual([]);
    // ...and drizzle-kit finds nothing to do on ours.
    await promisify(execFile)("pnpm", ["exec", "drizzle-kit", "migrate"], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: viaRun },
    });
    expect((await describeSchema(viaRun)).applied).toEqual(mine.applied);
  }, 120_000);
});

// A transaction pooler refuses the search_path startup option: operators set it on the role there.
describe.skipIf(poolerUrl)("an operator's own schema", () => {
  it("both deploy paths put every table, index and function in it, the same as in public, and nothing in public", async () => {
    const inSchema = async () => {
      const url = await emptyDatabase();
      await withClient(url, (c) => c.query("create schema stroem"));
      return url;
    };
    const viaKit = await inSchema();
    const viaRun = await inSchema();
    const reference = await emptyDatabase();
    await promisify(execFile)("pnpm", ["exec", "drizzle-kit", "migrate"], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: withSearchPath(viaKit, "stroem") },
    });
    await migrate(withSearchPath(viaRun, "stroem"));
    await migrate(reference);
    const expected = await describeSchema(reference);
    for (const url of [viaKit, viaRun]) {
      const got = await describeSchema(url, "stroem");
      expect(got.columns).toEqual(expected.columns);
      expect(got.indexes.map((i) => i.indexname)).toEqual(expected.indexes.map((i) => i.indexname));
      expect(got.constraints.map((c) => c.conname)).toEqual(expected.constraints.map((c) => c.conname));
      const leftovers = await withClient(url, (c) =>
        c.query(
          `select (select count(*)::int from pg_tables where schemaname = 'public') as tables,
                  (select count(*)::int from pg_proc where proname like 'stroem_%' and pronamespace = 'public'::regnamespace) as functions,
                  (select count(*)::int from pg_proc where proname like 'stroem_%' and pronamespace = 'stroem'::regnamespace) as ours`,
        ),
      );
      expect(leftovers.rows[0]).toMatchObject({ tables: 0, functions: 0 });
      expect(leftovers.rows[0].ours).toBeGreaterThan(5);
    }
  }, 120_000);
});

describe("drizzle.config.ts", () => {
  const kit = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        "pnpm",
        ["exec", "drizzle-kit", ...args],
        { cwd: ROOT, env: { ...process.env, DATABASE_URL: undefined } },
        (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });

  it("drizzle-kit migrate without DATABASE_URL refuses in one line, instead of trying a default server", async () => {
    const { code, stderr } = await kit(["migrate"]);
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/^drizzle-kit migrate: DATABASE_URL is not set; set it to the database to use .*\n$/);
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("commands that need no database (check, as pnpm drift runs it) work without DATABASE_URL", async () => {
    const { code, stdout } = await kit(["check"]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/Everything's fine/);
  });
});
