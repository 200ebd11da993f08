import { CONSTRAINTS } from "@stroem/schema";
import { DrizzleQueryError } from "drizzle-orm/errors";
import {
  AuditLogAppendOnlyError,
  CheckViolationError,
  ConnectionError,
  DatabaseError,
  ForeignKeyViolationError,
  PG,
  StroemDbError,
  UniqueViolationError,
} from "./errors.js";

/**
 * The translator from what node-postgres and Drizzle throw to the typed
 * errors of `errors.ts`; every repo call goes through it (`translateErrors`
 * in db.ts). Drizzle's wrapper (`DrizzleQueryError`: "Failed query: <the SQL
 * text> params: <the values>") never survives: `cause` is the driver's own
 * error, and `statement` names the prepared statement when there was one.
 */

interface PgErrorLike {
  code?: string;
  constraint?: string;
  detail?: string;
  message: string;
  severity?: string;
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "ECONNRESET",
  "EHOSTUNREACH",
  "EPIPE",
]);

/** The innermost error carrying a Postgres SQLSTATE or a socket error code, following `cause`. */
function rootCause(error: unknown): { pg?: PgErrorLike; sys?: NodeJS.ErrnoException } {
  let current: unknown = error;
  for (let depth = 0; current && depth < 10; depth++) {
    const e = current as PgErrorLike & NodeJS.ErrnoException & { cause?: unknown };
    if (typeof e.code === "string") {
      if (/^[0-9A-Z]{5}$/.test(e.code) && e.severity !== undefined) return { pg: e };
      if (CONNECTION_CODES.has(e.code)) return { sys: e };
    }
    current = e.cause;
  }
  return {};
}

function causeChain(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = error; e && chain.length < 10; e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}

export interface Target {
  host?: string;
  port?: number;
}

const isConnectionMessage = (m: string) =>
  /timeout exceeded when trying to connect|Connection terminated|connection timeout|Client has encountered a connection error/i.test(
    m,
  );

/**
 * Turns whatever a query threw into one of the errors above. Errors that are
 * already ours pass through unchanged. `target` names the server for
 * connection errors.
 */
export function translateError(error: unknown, target: Target = {}): Error {
  if (error instanceof StroemDbError) return error;
  const translated = translate(error, target);
  const statement = statementOf(error);
  if (translated instanceof StroemDbError && statement !== undefined) translated.statement = statement;
  return translated;
}

/** What a failed statement is called in logs: set on the driver's error by `runStatement`. */
export const STATEMENT_NAME = Symbol("stroem.statement");

function statementOf(error: unknown): string | undefined {
  for (const e of causeChain(error)) {
    const name = (e as { [STATEMENT_NAME]?: string } | null)?.[STATEMENT_NAME];
    if (name !== undefined) return name;
  }
  return undefined;
}

function translate(error: unknown, target: Target): Error {
  const where = `${target.host ?? "?"}:${target.port ?? "?"}`;
  // Drizzle's wrapper carries the SQL text and the values: keep the driver's error only.
  const cause = error instanceof DrizzleQueryError && error.cause !== undefined ? error.cause : error;
  const { pg, sys } = rootCause(error);
  if (sys) {
    return new ConnectionError(
      `cannot reach PostgreSQL at ${where}: ${sys.code} (${sys.message})`,
      target.host,
      target.port,
      {
        cause,
      },
    );
  }
  if (pg?.code) {
    const detail = pg.detail ? ` (${pg.detail})` : "";
    switch (pg.code) {
      case PG.CHECK_VIOLATION:
        return new CheckViolationError(`check constraint ${pg.constraint} violated${detail}`, pg.code, pg.constraint, {
          cause,
          detail: pg.detail,
        });
      case PG.UNIQUE_VIOLATION:
        return new UniqueViolationError(
          `unique constraint ${pg.constraint} violated${detail}`,
          pg.code,
          pg.constraint,
          { cause, detail: pg.detail },
        );
      case PG.FOREIGN_KEY_VIOLATION:
        return new ForeignKeyViolationError(`foreign key ${pg.constraint} violated${detail}`, pg.code, pg.constraint, {
          cause,
          detail: pg.detail,
        });
      case PG.RESTRICT_VIOLATION:
        if (pg.constraint === CONSTRAINTS.auditAppendOnly) {
          return new AuditLogAppendOnlyError(/: (\w+) refused/.exec(pg.message)?.[1] ?? "change", { cause });
        }
        return new DatabaseError(pg.message, pg.code, { cause });
      case PG.ADMIN_SHUTDOWN:
      case PG.CANNOT_CONNECT_NOW:
        return new ConnectionError(
          `PostgreSQL at ${where} is shutting down or starting: ${pg.message}`,
          target.host,
          target.port,
          {
            cause,
          },
        );
      default:
        if (pg.code.startsWith("28") || pg.code.startsWith("3D") || pg.code.startsWith("08")) {
          return new ConnectionError(
            `cannot connect to PostgreSQL at ${where}: ${pg.message}`,
            target.host,
            target.port,
            {
              cause,
            },
          );
        }
        return new DatabaseError(pg.message, pg.code, { cause });
    }
  }
  const message = cause instanceof Error ? cause.message : String(cause);
  // The driver's own words ("Connection terminated unexpectedly"), not Drizzle's wrapper ("Failed query: …").
  const lost = causeChain(error)
    .map((e) => (e instanceof Error ? e.message : String(e)))
    .find(isConnectionMessage);
  if (lost !== undefined) {
    return new ConnectionError(`cannot reach PostgreSQL at ${where}: ${lost}`, target.host, target.port, {
      cause,
    });
  }
  if (error instanceof DrizzleQueryError) return new DatabaseError(message, undefined, { cause });
  // Not from the database (a FlowValidationError from the planner, say): already typed, pass it on.
  return error instanceof Error ? error : new DatabaseError(message, undefined, { cause });
}
