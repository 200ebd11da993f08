import { randomBytes } from "node:crypto";
import { dropDatabase, withClient, withDatabase } from "@stroem/embedded-pg";
import { runMigrations, withSearchPath } from "@stroem/schema";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { poolerUrlFrom } from "./pooler.js";
import { SCHEMA_VARIABLE } from "./provided.js";
import { describeServer, startTestServer } from "./server.js";

/**
 * Vitest global setup: starts (or finds) one server for the run, creates a
 * template database and migrates it once. Test files copy it with
 * `useTestDb()`. The teardown drops the template and stops the server, also
 * when tests failed.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startTestServer();
  console.log(`[stroem-testing] PostgreSQL: ${server.kind} (${server.reason}) at ${describeServer(server.url)}`);
  const template = `stroem_tpl_${randomBytes(5).toString("hex")}`;
  const schema = process.env[SCHEMA_VARIABLE]?.trim() || undefined;
  let poolerUrl: string | undefined;
  try {
    poolerUrl = poolerUrlFrom(process.env, server.kind);
    if (poolerUrl) {
      // Fail here, once, rather than in every file. Only the postgres database is
      // reached through the pooler here, never the template (see POOLER_VARIABLE).
      await withClient(withDatabase(poolerUrl, "postgres"), (c) => c.query("select 1"));
      console.log(`[stroem-testing] test databases through the pooler at ${describeServer(poolerUrl)}`);
    }
    await withClient(server.url, (c) => c.query(`create database ${c.escapeIdentifier(template)}`));
    let templateUrl = withDatabase(server.url, template);
    if (schema) {
      // The tables in an operator's own schema (see SCHEMA_VARIABLE), every connection's search path.
      await withClient(templateUrl, (c) => c.query(`create schema ${c.escapeIdentifier(schema)}`));
      templateUrl = withSearchPath(templateUrl, schema);
      console.log(`[stroem-testing] tables in schema ${schema}`);
    }
    const pool = new pg.Pool({ connectionString: templateUrl, max: 1 });
    try {
      await runMigrations(drizzle({ client: pool }));
    } finally {
      await pool.end();
    }
  } catch (error) {
    await dropDatabase(server.url, template).catch(() => undefined);
    await server.stop();
    throw error;
  }
  project.provide("stroemPg", { adminUrl: server.url, template, kind: server.kind, poolerUrl, schema });
  return async () => {
    try {
      await dropDatabase(server.url, template);
    } finally {
      await server.stop();
    }
  };
}
