/** The server the bench measures on, and its scratch databases. */
import { createDatabaseFromTemplate, startEmbeddedPostgres, withClient } from "@stroem/embedded-pg";

export { dropDatabase, withClient, withDatabase } from "@stroem/embedded-pg";

export interface BenchServer {
  /** Admin URL (the `postgres` database or whatever the caller gave). */
  adminUrl: string;
  /** "embedded" or the redacted URL the caller gave. */
  kind: string;
  stop(): Promise<void>;
}

/** The given server (a scratch database is created there and dropped), else an embedded one with fsync on. */
export async function openServer(url: string | undefined): Promise<BenchServer> {
  if (url) return { adminUrl: url, kind: "given (STROEM_BENCH_DATABASE_URL)", stop: async () => {} };
  const server = await startEmbeddedPostgres({ fast: false });
  return { adminUrl: server.url, kind: "embedded PostgreSQL (fsync on)", stop: () => server.stop() };
}

/**
 * `CREATE DATABASE name [TEMPLATE template]` (a template still has a backend
 * for a moment after its last pool ended: `createDatabaseFromTemplate` retries that).
 */
export async function createDatabase(adminUrl: string, name: string, template?: string): Promise<void> {
  if (template) return createDatabaseFromTemplate(adminUrl, name, template);
  await withClient(adminUrl, (c) => c.query(`create database ${c.escapeIdentifier(name)}`));
}

export interface ServerSettings {
  version: string;
  fsync: string;
  synchronousCommit: string;
  fullPageWrites: string;
  sharedBuffers: string;
  maxConnections: string;
}

export async function serverSettings(adminUrl: string): Promise<ServerSettings> {
  return withClient(adminUrl, async (c) => {
    const show = async (name: string) => (await c.query(`show ${name}`)).rows[0]?.[name] as string;
    return {
      version: await show("server_version"),
      fsync: await show("fsync"),
      synchronousCommit: await show("synchronous_commit"),
      fullPageWrites: await show("full_page_writes"),
      sharedBuffers: await show("shared_buffers"),
      maxConnections: await show("max_connections"),
    };
  });
}

/** What a stretch of work cost: CPU of this process and of the server, WAL written. */
export interface Cost {
  nodeCpuMs: number;
  /** All of the server's processes (postmaster, backends, background workers); undefined when the server is not local. */
  serverCpuMs: number | undefined;
  walBytes: number;
}

const CLOCK_TICK_MS = 10; // Linux USER_HZ is 100

/** CPU ms of the local server `pid` belongs to: the postmaster, its reaped children and the live ones. */
async function serverCpuMs(backendPid: number): Promise<number | undefined> {
  const { readFile, readdir } = await import("node:fs/promises");
  const stat = async (pid: number | string) => {
    try {
      const text = await readFile(`/proc/${pid}/stat`, "utf8");
      return text.slice(text.lastIndexOf(")") + 2).split(" "); // fields from the 3rd (state) on
    } catch {
      return undefined;
    }
  };
  const backend = await stat(backendPid);
  if (!backend) return undefined;
  const postmaster = Number(backend[1]);
  const own = await stat(postmaster);
  if (!own) return undefined;
  // utime, stime, cutime, cstime are fields 14-17 (indexes 11-14 here).
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const s = await stat(entry);
    if (s && Number(s[1]) === postmaster) ticks += Number(s[11]) + Number(s[12]);
  }
  return ticks * CLOCK_TICK_MS;
}

/** Starts measuring; `stop()` returns what the work since cost. */
export async function startCost(url: string): Promise<{ stop(): Promise<Cost> }> {
  const sample = () =>
    withClient(url, async (c) => {
      const r = await c.query<{ pid: number; lsn: string }>(
        "select pg_backend_pid() as pid, pg_current_wal_lsn()::text as lsn",
      );
      const row = r.rows[0] as { pid: number; lsn: string };
      return { lsn: row.lsn, server: await serverCpuMs(row.pid), node: process.cpuUsage() };
    });
  const before = await sample();
  return {
    async stop() {
      const after = await sample();
      const wal = await withClient(url, (c) =>
        c.query<{ bytes: string }>("select pg_wal_lsn_diff($1, $2)::text as bytes", [after.lsn, before.lsn]),
      );
      const node = process.cpuUsage(before.node);
      return {
        nodeCpuMs: (node.user + node.system) / 1000,
        serverCpuMs:
          after.server === undefined || before.server === undefined ? undefined : after.server - before.server,
        walBytes: Number(wal.rows[0]?.bytes ?? 0),
      };
    },
  };
}
