import { defineConfig } from "drizzle-kit";

// Operators deploy with `pnpm exec drizzle-kit migrate` (DATABASE_URL); services
// call `runMigrations(db)` at start-up. Both read the migrations below and
// record them in drizzle's default table, so they agree on what is applied.

// Commands that talk to a database need DATABASE_URL: without it, refuse in
// one line rather than let drizzle-kit try some default server. `generate`
// and `check` (used by `pnpm db:generate` and `pnpm drift`) need no database.
const NEEDS_DATABASE = new Set(["migrate", "push", "pull", "introspect", "studio"]);
const command = process.argv.slice(2).find((arg) => !arg.startsWith("-"));
const url = process.env.DATABASE_URL?.trim();
if (!url && command && NEEDS_DATABASE.has(command)) {
  process.stderr.write(
    `drizzle-kit ${command}: DATABASE_URL is not set; set it to the database to use (DATABASE_URL=postgres://… pnpm exec drizzle-kit ${command})\n`,
  );
  process.exit(1);
}

export default defineConfig({
  dialect: "postgresql",
  schema: "./packages/schema/src/tables.ts",
  out: "./packages/schema/drizzle",
  ...(url ? { dbCredentials: { url } } : {}),
  migrations: {
    schema: "drizzle",
    table: "__drizzle_migrations",
  },
  strict: true,
  verbose: true,
});
