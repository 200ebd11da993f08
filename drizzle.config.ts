import { defineConfig } from "drizzle-kit";

// Operators deploy with `pnpm exec drizzle-kit migrate` (DATABASE_URL); services
// call `runMigrations(db)` at start-up. Both read the migrations below and
// record them in drizzle's default table, so they agree on what is applied.
export default defineConfig({
  dialect: "postgresql",
  schema: "./packages/schema/src/tables.ts",
  out: "./packages/schema/drizzle",
  dbCredentials: {
    url: process.env.DATABASE_URL ?? "postgres://localhost:5432/stroem",
  },
  migrations: {
    schema: "drizzle",
    table: "__drizzle_migrations",
  },
  strict: true,
  verbose: true,
});
