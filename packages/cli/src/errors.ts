import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseDatabaseUrl, translateError } from "@stroem/repos";
import { MIGRATIONS_FOLDER } from "@stroem/schema";

/** A failure to report as one line, exit code 1. */
export class CliError extends Error {
  override name = "CliError";
}

/** What a signal interrupted; `exitCode` is 128 + the signal's number. */
export class Interrupted extends Error {
  override name = "Interrupted";
  readonly exitCode: number;
  constructor(readonly signal: "SIGINT" | "SIGTERM") {
    super(`interrupted by ${signal}`);
    this.exitCode = signal === "SIGINT" ? 130 : 143;
  }
}

interface PgLike {
  code: string;
  message: string;
}

function chain(error: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = error; e && out.length < 10; e = (e as { cause?: unknown }).cause) out.push(e);
  return out;
}

/** The migration file (tag) holding `statement`, as drizzle splits files at `--> statement-breakpoint`. */
function migrationOf(statement: string, folder = MIGRATIONS_FOLDER): string | undefined {
  const wanted = statement.trim();
  if (!wanted) return undefined;
  try {
    for (const file of readdirSync(folder)
      .filter((f) => f.endsWith(".sql"))
      .sort()) {
      if (readFileSync(path.join(folder, file), "utf8").includes(wanted)) return file.slice(0, -".sql".length);
    }
  } catch {}
  return undefined;
}

/**
 * One line for an error, without the `stroem-db: ` prefix. A failed
 * migration names the migration and Postgres' own message and code instead
 * of the SQL drizzle puts in its message; driver errors are translated like
 * the repos' (`ConnectionError: cannot reach PostgreSQL at host:port…`, with
 * `url`'s host and port).
 */
export function formatError(error: unknown, url?: string): string {
  if (error instanceof CliError) return error.message;
  const links = chain(error);
  const query = links.find((e): e is { query: string } => typeof (e as { query?: unknown }).query === "string");
  const pg = links.find(
    (e): e is PgLike =>
      typeof (e as PgLike).code === "string" &&
      /^[0-9A-Z]{5}$/.test((e as PgLike).code) &&
      (e as { severity?: unknown }).severity !== undefined,
  );
  if (query && pg) {
    const tag = migrationOf(query.query);
    if (tag) return `migration ${tag} failed: ${pg.message} (${pg.code}); nothing was applied`;
  }
  let target = {};
  try {
    if (url) target = parseDatabaseUrl(url);
  } catch {}
  const translated = translateError(error, target);
  const message = translated.message.split("\n")[0] ?? "";
  return `${translated.name}: ${message}`;
}
