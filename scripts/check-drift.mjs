// Fails when the committed migrations disagree with their sources:
// - the Drizzle schema: runs `drizzle-kit generate` against a scratch copy of
//   the migrations folder and fails if it writes anything, then runs
//   `drizzle-kit check` on the real one;
// - the SQL folder (packages/schema/sql/, the functions, triggers and table
//   settings): the last definition of each block in the migrations must be the
//   block, and every object they install must have one (the text check; the
//   catalog check is packages/testing/test/sql-source.test.ts). Needs
//   @stroem/schema built (turbo builds it first).
import { execFileSync } from "node:child_process";
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const migrations = path.join(root, "packages/schema/drizzle");
// drizzle-kit mangles absolute `out` paths, so the scratch copy lives in the repo (git-ignored).
const scratch = path.join(root, ".drift-tmp");
rmSync(scratch, { recursive: true, force: true });
const list = (dir) => readdirSync(dir, { recursive: true }).map(String).sort();

class DriftError extends Error {}

try {
  const out = path.join(scratch, "drizzle");
  const relOut = `./${path.relative(root, out)}`;
  cpSync(migrations, out, { recursive: true });
  const config = path.join(root, ".drift.config.ts");
  writeFileSync(
    config,
    `import { defineConfig } from "drizzle-kit";
export default defineConfig({ dialect: "postgresql", schema: "./packages/schema/src/tables.ts", out: ${JSON.stringify(relOut)} });
`,
  );
  try {
    // drizzle-kit may exit 0 after an error: require one of its two success lines.
    const log = execFileSync("pnpm", ["exec", "drizzle-kit", "generate", "--config", config], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (!/No schema changes|Your SQL migration file/.test(log)) {
      console.error(`drift: drizzle-kit generate did not finish:\n${log}`);
      throw new DriftError();
    }
  } finally {
    rmSync(config, { force: true });
  }
  const before = list(migrations);
  const after = list(out);
  if (JSON.stringify(before) !== JSON.stringify(after)) {
    const added = after.filter((f) => !before.includes(f));
    console.error(
      `drift: the schema differs from the committed migrations; drizzle-kit generate would add: ${added.join(", ")}\n` +
        "Run `pnpm db:generate --name <change>` and commit the new migration.",
    );
    throw new DriftError();
  }
  execFileSync("pnpm", ["exec", "drizzle-kit", "check"], { cwd: root, stdio: "inherit" });
  // Operators may deploy into a schema of their own (search_path): no migration
  // may name `public` (drizzle-kit writes `REFERENCES "public"."t"` for foreign keys).
  for (const file of readdirSync(migrations).filter((f) => f.endsWith(".sql"))) {
    const text = readFileSync(path.join(migrations, file), "utf8");
    if (/"public"\./.test(text)) {
      console.error(
        `drift: ${file} names the public schema ("public".…); drop the qualification so the tables follow the search path`,
      );
      throw new DriftError();
    }
  }
  const { textDrift } = await import(path.join(root, "packages/schema/dist/sql-source.js"));
  const problems = textDrift();
  if (problems.length > 0) {
    console.error(
      `drift: packages/schema/sql/ and the migrations disagree:\n${problems.map((p) => `  - ${p}`).join("\n")}\n` +
        "Edit the folder, never a migration, then run `pnpm db:sql --name <change>` and commit the new migration.",
    );
    throw new DriftError();
  }
  console.log("drift: schema, SQL folder and committed migrations agree");
} catch (error) {
  if (!(error instanceof DriftError)) throw error;
  process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
