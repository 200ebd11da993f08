import { AUDIT_ACTOR_TYPES, type AuditActorType, type AuditEvent, auditEvent } from "@stroem/schema";
import { and, desc, eq, getTableColumns, gte, lt, type SQL, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "./db.js";
import { InvalidInputError } from "./errors.js";
import { optionalText, requireInt, requireOneOf, requireText } from "./validate.js";

export type { AuditEvent };

/**
 * Who made a change, for its audit event: a user, a worker (`id` required:
 * the user's or worker's id) or the system (`id` optional, e.g. the name of
 * the process). Calls that write audit events take it as `actor`; the default
 * is `{ type: "system" }`.
 */
export interface AuditActor {
  type: AuditActorType;
  id?: string | null;
}

export const SYSTEM_ACTOR: AuditActor = Object.freeze({ type: "system" });

/** The actor, checked; `field` names it in errors. Throws `InvalidInputError`. */
export function checkActor(field: string, actor: unknown): { type: AuditActorType; id: string | null } {
  if (actor === undefined) return { type: "system", id: null };
  if (typeof actor !== "object" || actor === null) {
    throw new InvalidInputError(field, "must be an object { type: 'user' | 'worker' | 'system', id? }");
  }
  const a = actor as { type?: unknown; id?: unknown };
  const type = requireOneOf(`${field}.type`, a.type, AUDIT_ACTOR_TYPES);
  const id = optionalText(`${field}.id`, a.id);
  if (id === null && type !== "system") throw new InvalidInputError(`${field}.id`, `is required for a ${type}`);
  if (id !== null && id.length > MAX_TEXT)
    throw new InvalidInputError(`${field}.id`, `must be at most ${MAX_TEXT} characters`);
  return { type, id };
}

const MAX_TEXT = 200;

/** Who made a change, recorded in its audit event (`actor`, default `{ type: "system" }`). */
export interface AuditOptions {
  actor?: AuditActor;
}

/** One event to record: what happened to which entity, by whom, with details. */
export interface NewAuditEvent {
  /** Default `{ type: "system" }`. */
  actor?: AuditActor;
  /** `entity.verb`, e.g. `user.created`, `api_key.revoked` (`AUDIT_ACTIONS` lists this package's). */
  action: string;
  /** `job`, `user`, `api_key`, ... */
  entityType: string;
  entityId: string;
  /** A JSON object; default `{}`. */
  details?: Record<string, unknown>;
}

const ACTION = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;

function checkEvent(event: NewAuditEvent) {
  if (typeof event !== "object" || event === null) throw new InvalidInputError("event", "must be an object");
  const actor = checkActor("actor", event.actor);
  const action = requireText("action", event.action);
  if (!ACTION.test(action) || action.length > MAX_TEXT) {
    throw new InvalidInputError(
      "action",
      `must be entity.verb in lower case (e.g. user.created), got ${JSON.stringify(action)}`,
    );
  }
  const entityType = requireText("entityType", event.entityType);
  const entityId = requireText("entityId", event.entityId);
  for (const [f, v] of [
    ["entityType", entityType],
    ["entityId", entityId],
  ] as const) {
    if (v.length > MAX_TEXT) throw new InvalidInputError(f, `must be at most ${MAX_TEXT} characters`);
  }
  const details = event.details ?? {};
  if (typeof details !== "object" || details === null || Array.isArray(details)) {
    throw new InvalidInputError("details", "must be a JSON object");
  }
  let json: string;
  try {
    json = JSON.stringify(details);
  } catch (error) {
    throw new InvalidInputError("details", `must be JSON-serialisable (${(error as Error).message})`);
  }
  return { actor, action, entityType, entityId, json };
}

/**
 * The INSERT of one audit event, checked, as a Drizzle `sql` fragment: run it
 * in the transaction of the change it records, or use it as a data-modifying
 * CTE (`with …, audit as (${auditEventSql(e)}) select …`) to write it in the
 * same statement. Throws `InvalidInputError` for a bad event (before
 * anything is written).
 */
export function auditEventSql(event: NewAuditEvent): SQL {
  const e = checkEvent(event);
  return sql`insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
    values (${e.actor.type}, ${e.actor.id}, ${e.action}, ${e.entityType}, ${e.entityId}, ${e.json}::jsonb)`;
}

/**
 * Records one audit event (one INSERT). Pass the transaction that makes the
 * change (`db.transaction(async (tx) => { …; await recordAudit(tx, e) })`):
 * the event then exists exactly when the change does. Throws
 * `InvalidInputError`, having written nothing.
 */
export async function record(db: Executor, event: NewAuditEvent): Promise<void> {
  const statement = auditEventSql(event);
  await translateErrors(db, () => db.execute(statement));
}

/** Filters of `list`; every one optional, combined with AND. */
export interface ListAuditEvents {
  actorType?: AuditActorType;
  /** Needs `actorType`. */
  actorId?: string;
  action?: string;
  entityType?: string;
  /** Needs `entityType` (the index is on both). */
  entityId?: string;
  /** Events at or after this time. */
  from?: Date;
  /** Events before this time. */
  to?: Date;
  /** 1 to 1,000. */
  limit: number;
  /** `nextCursor` of the previous page; absent for the first (newest) page. */
  cursor?: string;
}

/** A page of audit events, newest first. */
export interface AuditPage {
  events: AuditEvent[];
  /** Pass as `cursor` for the next (older) page; absent on the last page. */
  nextCursor?: string;
}

/** Largest page `list` returns. */
export const MAX_AUDIT_PAGE = 1000;

const FILTER_KEYS = new Set([
  "actorType",
  "actorId",
  "action",
  "entityType",
  "entityId",
  "from",
  "to",
  "limit",
  "cursor",
]);

/** The cursor's position: the exact `occurred_at` (microseconds, UTC) and id of the last event of a page. */
interface Position {
  at: string;
  id: string;
}

const CURSOR_AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

function encodeCursor(p: Position): string {
  return Buffer.from(JSON.stringify([p.at, p.id])).toString("base64url");
}

function decodeCursor(cursor: unknown): Position {
  const bad = () => new InvalidInputError("cursor", "is not a cursor from AuditRepo.list (pass nextCursor unchanged)");
  if (typeof cursor !== "string" || cursor.length === 0 || cursor.length > 200) throw bad();
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (
    !Array.isArray(value) ||
    value.length !== 2 ||
    typeof value[0] !== "string" ||
    !CURSOR_AT.test(value[0]) ||
    typeof value[1] !== "string" ||
    !/^[1-9]\d{0,18}$/.test(value[1])
  ) {
    throw bad();
  }
  return { at: value[0], id: value[1] };
}

function requireDate(field: string, value: unknown): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new InvalidInputError(field, `must be a valid Date, got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * A page of audit events, newest first (`occurred_at`, then id), filtered.
 * Keyset pagination over `(occurred_at, id)`: the cursor holds the last
 * event's exact position, so pages never overlap nor skip an event, however
 * many events are written between them (a newer event shows on a new first
 * page, not on the next one). Served by `idx_audit_event_time`, or by
 * `idx_audit_event_entity` with `entityType` (and `entityId`); the other
 * filters are checked along the walk. Only reads: works on a read-only
 * connection or a hot standby. Throws `InvalidInputError` for an unknown
 * filter, a bad value, `actorId` without `actorType`, `entityId` without
 * `entityType`, `from` after `to`, or a cursor it did not make.
 */
export async function list(db: Executor, query: ListAuditEvents): Promise<AuditPage> {
  if (typeof query !== "object" || query === null) throw new InvalidInputError("query", "must be an object");
  for (const key of Object.keys(query)) {
    if (!FILTER_KEYS.has(key)) {
      throw new InvalidInputError(key, `is not a filter of AuditRepo.list (${[...FILTER_KEYS].join(", ")})`);
    }
  }
  const limit = requireInt("limit", query.limit, 1, MAX_AUDIT_PAGE);
  const filters: SQL[] = [];
  if (query.actorType !== undefined) {
    filters.push(eq(auditEvent.actorType, requireOneOf("actorType", query.actorType, AUDIT_ACTOR_TYPES)));
  }
  if (query.actorId !== undefined) {
    if (query.actorType === undefined) throw new InvalidInputError("actorId", "needs actorType");
    filters.push(eq(auditEvent.actorId, requireText("actorId", query.actorId)));
  }
  if (query.action !== undefined) filters.push(eq(auditEvent.action, requireText("action", query.action)));
  if (query.entityType !== undefined) {
    filters.push(eq(auditEvent.entityType, requireText("entityType", query.entityType)));
  }
  if (query.entityId !== undefined) {
    if (query.entityType === undefined) throw new InvalidInputError("entityId", "needs entityType");
    filters.push(eq(auditEvent.entityId, requireText("entityId", query.entityId)));
  }
  const from = query.from === undefined ? undefined : requireDate("from", query.from);
  const to = query.to === undefined ? undefined : requireDate("to", query.to);
  if (from && to && from > to) throw new InvalidInputError("from", "must not be after to");
  if (from) filters.push(gte(auditEvent.occurredAt, from));
  if (to) filters.push(lt(auditEvent.occurredAt, to));
  if (query.cursor !== undefined) {
    const p = decodeCursor(query.cursor);
    filters.push(sql`(${auditEvent.occurredAt}, ${auditEvent.id}) < (${p.at}::timestamptz, ${p.id}::bigint)`);
  }
  const rows = await translateErrors(db, () =>
    db
      .select({
        ...getTableColumns(auditEvent),
        // The exact position (Date keeps milliseconds, the column microseconds).
        position: sql<string>`to_char(${auditEvent.occurredAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`,
        idText: sql<string>`${auditEvent.id}::text`,
      })
      .from(auditEvent)
      .where(and(...filters))
      .orderBy(desc(auditEvent.occurredAt), desc(auditEvent.id))
      .limit(limit + 1),
  );
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  const events = page.map(({ position: _p, idText: _i, ...event }) => event);
  return rows.length > limit && last
    ? { events, nextCursor: encodeCursor({ at: last.position, id: last.idText }) }
    : { events };
}
