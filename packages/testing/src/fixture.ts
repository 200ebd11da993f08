import { randomBytes } from "node:crypto";
import path from "node:path";
import {
  countConnections,
  createDatabaseFromTemplate,
  dropDatabase,
  type RunningServer,
  startEmbeddedPostgres,
  withClient,
  withDatabase,
} from "@stroem/embedded-pg";
import * as schema from "@stroem/schema";
import { runMigrations } from "@stroem/schema";
import { drizzle, type NodePgDatabase } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, inject } from "vitest";

import { countPoolerClients } from "./pooler.js";
import { describeServer } from "./server.js";

export type { ProvidedPg } from "./provided.js";

export type TestDatabase = NodePgDatabase<typeof schema> & { $client: pg.Pool };

export interface TestDb {
  /** A Drizzle database over a pool (max 10) on this file's own database. */
  readonly db: TestDatabase;
  /** URL of this file's database. */
  readonly url: string;
  /** Name of this file's database. */
  readonly name: string;
  /**
   * `"transaction"` when the run reaches test databases through a transaction
   * pooler (`STROEM_TEST_POOLER_URL`), else undefined: pass it on as
   * `createPool(t.url, { pooler: t.pooler })`, and skip tests that need a
   * session connection (LISTEN) when it is set.
   */
  readonly pooler: "transaction" | undefined;
  /**
   * Opens another pool to the same database (for workers on separate
   * connections). The fixture ends any pool still open after the file and
   * fails the file for the leak: end it yourself with `await db.$client.end()`.
   */
  openPool(options?: { max?: number; applicationName?: string }): TestDatabase;
}

/**
 * Gives the calling test file a fresh, migrated database copied from the run's
 * template (`CREATE DATABASE ... TEMPLATE`). Call once at the top of a file.
 * After the file: every pool is ended and the database dropped, unless a test
 * failed, in which case it is kept and its URL printed for inspection. A pool
 * left open by the test, or any other connection still open to the database,
 * fails the file.
 */
export function useTestDb(): TestDb {
  let state: { adminUrl: string; poolerUrl?: string; name: string; url: string; db: TestDatabase } | undefined;
  const extraPools: pg.Pool[] = [];
  let failed = false;

  const open = (
    url: string,
    options: { max?: number; applicationName?: string } = {},
    pooled = Boolean(state?.poolerUrl),
  ): TestDatabase => {
    const pool = new pg.Pool({
      connectionString: url,
      max: options.max ?? 10,
      application_name: options.applicationName ?? "stroem-test",
      // Through a transaction pooler, @stroem/repos must not name its statements
      // (the option `createPool(url, { pooler: "transaction" })` sets too).
      ...(pooled ? { preparedStatements: false } : {}),
    } as pg.PoolConfig);
    // Connections killed by the server (pg_terminate_backend tests), idle or checked out,
    // must fail their queries, not crash the runner.
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
    return drizzle({ client: pool, schema }) as TestDatabase;
  };

  // Vitest reads the first parameter's pattern for fixtures; the suite comes second.
  // biome-ignore lint/correctness/noEmptyPattern: required shape, see above
  beforeAll(async ({}, suite) => {
    const { adminUrl, template, poolerUrl, schema: tablesSchema } = inject("stroemPg");
    const file = path
      .basename((suite as { file?: { filepath?: string } }).file?.filepath ?? "test", ".ts")
      .replace(/[^a-z0-9]+/gi, "_")
      .toLowerCase();
    const name = `stroem_t_${file.slice(0, 30)}_${randomBytes(4).toString("hex")}`;
    await createDatabaseFromTemplate(adminUrl, name, template);
    // Through the pooler when there is one; the database is created directly (admin work).
    const direct = withDatabase(poolerUrl ?? adminUrl, name);
    const url = tablesSchema ? schema.withSearchPath(direct, tablesSchema) : direct;
    state = { adminUrl, poolerUrl, name, url, db: open(url, {}, Boolean(poolerUrl)) };
  });

  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      failed = true;
    });
  });

  afterAll(async () => {
    if (!state) return;
    const { adminUrl, poolerUrl, name, url, db } = state;
    const leaked = extraPools.filter((p) => !p.ended);
    await Promise.all([db.$client.end(), ...leaked.map((p) => p.end())]);
    // Through a pooler, its client connections are what a leak leaves; its
    // server connections stay open by design (the drop below closes them).
    const count = () => (poolerUrl ? countPoolerClients(poolerUrl, name) : countConnections(adminUrl, name));
    // A backend leaves pg_stat_activity a moment after its client hung up:
    // wait (with a deadline) for the ones just closed before calling any a leak.
    let stray = await count();
    for (const deadline = Date.now() + 5000; stray > 0 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 20));
      stray = await count();
    }
    if (failed) {
      const { kind } = inject("stroemPg");
      console.warn(
        kind === "url"
          ? `[stroem-testing] a test failed: kept database ${name} for inspection (${describeServer(url)})`
          : `[stroem-testing] a test failed: database ${name} stays until the ${kind} server stops at the end of the run; set STROEM_TEST_DATABASE_URL to keep it`,
      );
    } else {
      await dropDatabase(adminUrl, name);
    }
    if (leaked.length > 0)
      throw new Error(`${leaked.length} pool(s) opened with openPool() were not ended by the test`);
    if (stray > 0) throw new Error(`${stray} connection(s) to ${name} were still open after the file's tests`);
  });

  const get = () => {
    if (!state) throw new Error("useTestDb(): the database exists only inside tests and hooks, after beforeAll");
    return state;
  };

  return {
    get db() {
      return get().db;
    },
    get url() {
      return get().url;
    },
    get name() {
      return get().name;
    },
    // Known at collection time, so `it.skipIf(t.pooler)` works.
    get pooler() {
      return inject("stroemPg").poolerUrl ? "transaction" : undefined;
    },
    openPool(options) {
      const db = open(get().url, options);
      extraPools.push(db.$client);
      return db;
    },
  };
}

/** A PostgreSQL server of the test file's own (`useOwnServer()`), which it may restart. */
export interface OwnServer {
  /** URL of a migrated database on it (`stroem_own`). */
  readonly url: string;
  /** Admin URL (the `postgres` database). */
  readonly adminUrl: string;
  /**
   * Stops and starts the server on the same data directory and port (every
   * connection drops; committed data stays). `immediate`: as after a crash
   * (SIGQUIT, recovery from the WAL). `downMs`: stays down that long.
   */
  restart(options?: { immediate?: boolean; downMs?: number }): Promise<void>;
}

/**
 * Starts an embedded PostgreSQL for the calling test file alone (beforeAll;
 * stopped and removed afterAll), with one migrated database, so a test may
 * take the server away (`restart()`) without disturbing other files that
 * share the run's server. Always embedded, whatever server the run uses;
 * through a transaction pooler, skip such tests (`t.pooler`). Durable
 * (fsync and synchronous commit on), so a crash loses nothing acknowledged. Its
 * `beforeAll` may take a while on a loaded machine: it has a 120 s budget.
 */
export function useOwnServer(): OwnServer {
  let server: RunningServer | undefined;
  let url: string | undefined;
  beforeAll(async () => {
    // Durable (fsync and synchronous commit on): with them off, an immediate
    // restart (a crash) may lose commits already acknowledged, or worse.
    server = await startEmbeddedPostgres({ fast: false });
    await withClient(server.url, (c) => c.query("create database stroem_own"));
    url = withDatabase(server.url, "stroem_own");
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      await runMigrations(drizzle({ client: pool }));
    } finally {
      await pool.end();
    }
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  }, 60_000);
  const get = () => {
    if (!server || !url)
      throw new Error("useOwnServer(): the server exists only inside tests and hooks, after beforeAll");
    return { server, url };
  };
  return {
    get url() {
      return get().url;
    },
    get adminUrl() {
      return get().server.url;
    },
    async restart(options) {
      const { server: s } = get();
      if (!s.restart) throw new Error("useOwnServer(): this server cannot restart");
      await s.restart(options);
    },
  };
}
