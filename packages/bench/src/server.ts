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
