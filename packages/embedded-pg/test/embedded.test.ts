import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { chmod, cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmbeddedPostgresError, startEmbeddedPostgres, withClient } from "../src/index.js";
import { canRun, packagedInstall, serverUser } from "../src/install.js";

const SCRIPT = fileURLToPath(new URL("./fixtures/start-select-stop.mjs", import.meta.url));
const isRoot = process.getuid?.() === 0;
// Pointing the tests at a server of your own means no test starts one.
const ownServerOnly = Boolean(process.env.STROEM_TEST_DATABASE_URL);

interface Outcome {
  one?: number;
  dataDir?: string;
  name?: string;
  error?: string;
}

/** Runs the fixture script in a child whose temp directory is `tmp`. */
function runScript(tmp: string, opts: Record<string, unknown>): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [SCRIPT, JSON.stringify(opts)],
      { env: { ...process.env, TMPDIR: tmp }, timeout: 120_000 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as Outcome);
      },
    );
  });
}

/** Processes whose command line mentions `dir` (initdb and the postmaster carry their data directory). */
function processesMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)) pids.push(Number(pid));
    } catch {} // gone meanwhile
  }
  return pids;
}

async function waitFor(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const leftovers = async (tmp: string) => (await readdir(tmp)).filter((e) => e.startsWith("stroem-pg-"));

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "stroem-embedded-test-"));
  await chmod(scratch, 0o755);
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A fresh temp directory the server user can use (mkdtemp makes 0700). */
async function freshDir(name: string): Promise<string> {
  const dir = await mkdtemp(path.join(scratch, `${name}-`));
  await chmod(dir, 0o755);
  return dir;
}

describe.skipIf(ownServerOnly)("startEmbeddedPostgres (skipped when STROEM_TEST_DATABASE_URL is set)", () => {
  it("starts, answers a query, stops and removes its folder", async () => {
    const server = await startEmbeddedPostgres();
    try {
      const { rows } = await withClient(server.url, (c) => c.query<{ one: number }>("select 1 as one"));
      expect(rows[0]?.one).toBe(1);
      expect(existsSync(server.dataDir as string)).toBe(true);
    } finally {
      await server.stop();
    }
    expect(existsSync(server.dataDir as string)).toBe(false);
    await server.stop(); // twice is fine
  });

  it("an abort during initdb stops it, removes its folder and rejects with the reason", async () => {
    const tmp = await freshDir("abort");
    const outcome = await runScript(tmp, { abortDuringInitdb: true });
    expect(outcome).toEqual({ name: "Error", error: "aborted by the test" });
    expect(await leftovers(tmp)).toEqual([]);
    await waitFor(() => processesMentioning(tmp).length === 0);
  });

  it("a process that exits without stop() still leaves no folder and no server behind", async () => {
    const tmp = await freshDir("exit");
    const outcome = await runScript(tmp, { exitWithoutStop: true });
    expect(outcome.one).toBe(1);
    expect(await leftovers(tmp)).toEqual([]);
    await waitFor(() => processesMentioning(tmp).length === 0);
  });

  it("an abort after start-up leaves the running server alone", async () => {
    const controller = new AbortController();
    const server = await startEmbeddedPostgres({ signal: controller.signal });
    try {
      controller.abort();
      const { rows } = await withClient(server.url, (c) => c.query<{ one: number }>("select 1 as one"));
      expect(rows[0]?.one).toBe(1);
    } finally {
      await server.stop();
    }
  });

  it("restart() stops and starts the server on the same data and port; a pool carries on by itself", async () => {
    const server = await startEmbeddedPostgres();
    const pool = new pg.Pool({ connectionString: server.url, max: 2 });
    const errors: Error[] = [];
    pool.on("error", (e) => errors.push(e)); // idle connections dropped by the restart
    try {
      await pool.query("create table kept (n int)");
      await pool.query("insert into kept values (1)");
      const port = new URL(server.url).port;
      for (const immediate of [false, true]) {
        await server.restart?.({ immediate, downMs: 50 });
        expect(new URL(server.url).port).toBe(port);
        // The idle connection died with the server: the first query may fail, then the pool reconnects.
        let rows: { n: number }[] | undefined;
        for (let attempt = 0; attempt < 5 && !rows; attempt++) {
          rows = await pool.query<{ n: number }>("select n from kept").then(
            (r) => r.rows,
            () => undefined,
          );
        }
        expect(rows).toEqual([{ n: 1 }]);
      }
      expect(errors.length).toBeGreaterThan(0);
    } finally {
      await pool.end();
      await server.stop();
    }
    expect(existsSync(server.dataDir as string)).toBe(false);
    await expect(server.restart?.()).rejects.toThrow(/stopped/);
  });

  it("an already aborted signal starts nothing", async () => {
    const reason = new Error("no");
    await expect(startEmbeddedPostgres({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });
});

describe.skipIf(!isRoot || ownServerOnly)(
  "as root, binaries the postgres user cannot reach (skipped when not root: only root runs the server as another user; or when STROEM_TEST_DATABASE_URL is set)",
  () => {
    let locked: string;
    let installDir: string;
    beforeAll(async () => {
      // A checkout under a 0700 directory, like /root/proj: a real copy of the binaries' install folder.
      locked = await mkdtemp(path.join(scratch, "locked-"));
      await chmod(locked, 0o700);
      installDir = path.join(locked, "native");
      await cp(packagedInstall().dir, installDir, { recursive: true, verbatimSymlinks: true });
      const owner = await serverUser();
      expect(owner && (await canRun(installDir, owner))).toBe(false); // the situation this block is about
    });

    it("copies them once to the cache, runs from there and leaves no stroem-pg-* folder", async () => {
      const tmp = await freshDir("tmp");
      const cacheDir = path.join(await freshDir("cache"), "nested");
      const outcome = await runScript(tmp, { installDir, cacheDir });
      expect(outcome.error).toBeUndefined();
      expect(outcome.one).toBe(1);
      expect(await leftovers(tmp)).toEqual([]);
      const cached = await readdir(cacheDir);
      expect(cached).toEqual([expect.stringMatching(/^postgres-custom-[0-9a-f]{12}$/)]);
      // The second run uses the copy as it is.
      expect((await runScript(tmp, { installDir, cacheDir })).one).toBe(1);
      expect(await readdir(cacheDir)).toEqual(cached);
    });

    it("two starts racing to fill an empty cache both run, on one complete copy", async () => {
      const cacheDir = await freshDir("race");
      const servers = await Promise.all([
        startEmbeddedPostgres({ installDir, cacheDir }),
        startEmbeddedPostgres({ installDir, cacheDir }),
      ]);
      try {
        for (const s of servers) {
          const { rows } = await withClient(s.url, (c) => c.query<{ one: number }>("select 1 as one"));
          expect(rows[0]?.one).toBe(1);
        }
      } finally {
        await Promise.all(servers.map((s) => s.stop()));
      }
      expect(await readdir(cacheDir)).toEqual([expect.stringMatching(/^postgres-custom-/)]);
    });

    it("a cache the postgres user cannot read either: one line saying what and how to fix it", async () => {
      const cacheDir = path.join(locked, "cache");
      const error = await startEmbeddedPostgres({ installDir, cacheDir }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(EmbeddedPostgresError);
      const message = (error as Error).message;
      expect(message).not.toContain("\n");
      expect(message).toContain(`the postgres user can run neither the PostgreSQL binaries in ${installDir}`);
      expect(message).toMatch(/STROEM_PG_CACHE_DIR|run as a non-root user/);
    });
  },
);
