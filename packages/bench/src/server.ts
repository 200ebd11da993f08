/**
 * The server the bench measures on, and its scratch databases. The only
 * module that knows where the embedded PostgreSQL comes from (today
 * `@stroem/testing`; it may move to its own package).
 */
import { startEmbeddedPostgres } from "@stroem/testing";
import pg from "pg";

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

/** `url` pointing at `database` on the same server. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: "stroem-bench" });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const OBJECT_IN_USE = "55006";

/**
 * `CREATE DATABASE name [TEMPLATE template]`. A template still has a backend
 * for a moment after its last pool ended; that one error is retried briefly.
 */
export async function createDatabase(adminUrl: string, name: string, template?: string): Promise<void> {
  await withClient(adminUrl, async (c) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await c.query(
          `create database ${c.escapeIdentifier(name)}${template ? ` template ${c.escapeIdentifier(template)}` : ""}`,
        );
        return;
      } catch (error) {
        if ((error as { code?: string }).code !== OBJECT_IN_USE || Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });
}

export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, (c) => c.query(`drop database if exists ${c.escapeIdentifier(name)} with (force)`));
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
