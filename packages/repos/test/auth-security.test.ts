import { createHash, randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { ApiKeyRepo, InvalidInputError, RefreshTokenRepo, UserRepo } from "../src/index.js";
import { errorOf } from "./helpers.js";

const t = useTestDb();

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const AUTH_TABLES = ["user", "user_auth_link", "refresh_token", "api_key"] as const;

/** Every row of the auth tables with its xmin, so that even a write of the same values shows. */
async function snapshot() {
  const out: Record<string, string[]> = {};
  for (const table of AUTH_TABLES) {
    const r = await t.db.execute<{ row: string }>(
      sql`select xmin::text || ' ' || to_jsonb(x)::text as row from ${sql.identifier(table)} x order by 1`,
    );
    out[table] = r.rows.map((row) => row.row);
  }
  return out;
}

/** Every column that can hold text, in every table of every schema but the system ones. */
async function textColumns() {
  const r = await t.db.execute<{ schema: string; table: string; column: string }>(sql`
    select c.table_schema as schema, c.table_name as table, c.column_name as column
    from information_schema.columns c
    join information_schema.tables tb on tb.table_schema = c.table_schema and tb.table_name = c.table_name
    where tb.table_type = 'BASE TABLE'
      and c.table_schema not in ('pg_catalog', 'information_schema') and c.table_schema not like 'pg_toast%'
      and (c.data_type in ('text', 'character varying', 'character', 'jsonb', 'json')
           or (c.data_type = 'ARRAY' and c.udt_name in ('_text', '_varchar', '_jsonb')))
    order by 1, 2, 3`);
  return r.rows;
}

/** The columns holding any of `needles` (as text), as `table.column`. */
async function columnsHolding(needles: string[]) {
  const found: string[] = [];
  for (const c of await textColumns()) {
    const r = await t.db.execute<{ n: number }>(sql`
      select count(*)::int as n from ${sql.identifier(c.schema)}.${sql.identifier(c.table)} x
      where exists (select 1 from unnest(${sql.param(needles)}::text[]) s where position(s in x.${sql.identifier(c.column)}::text) > 0)`);
    if ((r.rows[0]?.n ?? 0) > 0) found.push(`${c.table}.${c.column}`);
  }
  return found;
}

describe("secrets are stored only as hashes", () => {
  it("after issuing, verifying and rotating, no text or jsonb column of any table holds a key or token", async () => {
    const users = await Promise.all(
      ["a", "b"].map((n) =>
        UserRepo.create(t.db, {
          email: `${n}-${randomUUID()}@example.org`,
          passwordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        }),
      ),
    );
    const secrets: string[] = [];
    for (const u of users) {
      await UserRepo.link(t.db, u.userId, { providerId: "github", externalId: u.userId });
      for (const name of ["ci", "deploy"]) {
        const { key } = await ApiKeyRepo.issue(t.db, { userId: u.userId, name });
        expect(await ApiKeyRepo.verify(t.db, key)).toBeDefined(); // writes last_used_at
        secrets.push(key);
      }
      const first = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
      const second = await RefreshTokenRepo.rotate(t.db, first.token);
      const third = await RefreshTokenRepo.rotate(t.db, second?.token);
      secrets.push(first.token, second?.token ?? "", third?.token ?? "");
    }
    expect(secrets.every((s) => s.startsWith("stroem_"))).toBe(true);
    // The whole secret, its random part, the part the display prefix does not show, and its bytes in hex.
    const needles = secrets.flatMap((s) => {
      const body = s.slice("stroem_xx_".length);
      return [s, body, body.slice(4), Buffer.from(body, "base64url").toString("hex")];
    });
    const columns = await textColumns();
    // The scan covers the auth tables and every table where a run's data lands: a step's definition
    // (input, spec), and the live and finished state of jobs and steps (outputs, errors, retry history).
    expect(columns.map((c) => `${c.table}.${c.column}`)).toEqual(
      expect.arrayContaining([
        "api_key.key_hash",
        "api_key.prefix",
        "refresh_token.token_hash",
        "job.input",
        "job_step.input",
        "job_step.action_spec",
        "job_live.output",
        "job_live.error_message",
        "job_live.cancel_reason",
        "job_result.output",
        "job_result.error_message",
        "job_result.cancel_reason",
        "step_live.output",
        "step_live.error_message",
        "step_live.retry_history",
        "step_result.output",
        "step_result.error_message",
        "step_result.retry_history",
      ]),
    );
    expect(await columnsHolding(needles)).toEqual([]);
    // The scan does find what is there: the hashes, in their columns.
    expect(await columnsHolding(secrets.map(sha256))).toEqual(
      expect.arrayContaining(["api_key.key_hash", "refresh_token.token_hash", "refresh_token.replaced_by"]),
    );
  });
});

describe("refused input writes nothing", () => {
  it("expired, revoked, retired-then-revoked, malformed, empty, very long and hostile secrets: undefined / false, no write", async () => {
    const u = await UserRepo.create(t.db, { email: `h-${randomUUID()}@example.org` });
    const live = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "live" });
    const revokedKey = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "revoked" });
    await ApiKeyRepo.revoke(t.db, u.userId, revokedKey.info.keyHash);
    const expiredKey = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "expired" });
    await t.db.execute(
      sql`update api_key set expires_at = now() - interval '1 minute' where key_hash = ${expiredKey.info.keyHash}`,
    );
    const token = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    const expiredToken = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    await t.db.execute(
      sql`update refresh_token set expires_at = now() - interval '1 minute' where family_id = ${expiredToken.familyId}`,
    );
    const revokedToken = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    await RefreshTokenRepo.revoke(t.db, revokedToken.token);
    const hostile: unknown[] = [
      "",
      " ",
      "'",
      "''",
      "' or '1'='1",
      "'; delete from api_key; --",
      "stroem_ak_' or 1=1 --",
      "%",
      "stroem_ak_%",
      `stroem_ak_${"%".repeat(48)}`,
      `stroem_rt_${"%".repeat(43)}`,
      `stroem_ak_${"_".repeat(48)}`,
      "\u0000",
      `stroem_ak_${"\u0000".repeat(48)}`,
      `stroem_rt_${"\u0000".repeat(43)}`,
      `${live.key.slice(0, -1)}\u0000`,
      `${token.token.slice(0, -1)}\u0000`,
      `${live.key.slice(0, 20)}'${live.key.slice(21)}`,
      `${token.token.slice(0, 20)}'${token.token.slice(21)}`,
      `${live.key} `,
      ` ${token.token}`,
      live.key.toUpperCase(),
      `${live.key}${live.key}`,
      "x".repeat(1_000_000),
      `stroem_ak_${"A".repeat(100_000)}`,
      "stroem_ak_\ud800".padEnd(58, "A"),
      live.info.keyHash,
      sha256(token.token),
      revokedKey.key,
      expiredKey.key,
      token.token.replace("stroem_rt_", "stroem_ak_").padEnd(58, "A"),
      live.key.replace("stroem_ak_", "stroem_rt_").slice(0, 53),
      null,
      undefined,
      42,
      {},
      [live.key],
      Buffer.from(live.key),
    ];
    const notApiKeys = [...hostile.filter((h) => h !== revokedKey.key && h !== expiredKey.key)];
    expect(await ApiKeyRepo.verify(t.db, live.key)).toBeDefined(); // the live ones work
    expect(await RefreshTokenRepo.rotate(t.db, token.token)).toBeDefined();
    const before = await snapshot();
    for (const input of hostile) {
      expect(await ApiKeyRepo.verify(t.db, input), String(input).slice(0, 80)).toBeUndefined();
    }
    for (const input of [...notApiKeys, expiredToken.token, revokedToken.token]) {
      expect(await RefreshTokenRepo.rotate(t.db, input), String(input).slice(0, 80)).toBeUndefined();
    }
    for (const input of [...notApiKeys, revokedToken.token]) {
      expect(await RefreshTokenRepo.revoke(t.db, input), String(input).slice(0, 80)).toBe(false);
    }
    expect(await snapshot()).toEqual(before);
  });

  it("look-ups and writes with hostile strings: documented answers (undefined or InvalidInputError), nothing written", async () => {
    const u = await UserRepo.create(t.db, { email: `l-${randomUUID()}@example.org` });
    const before = await snapshot();
    const strings = [
      "",
      "%",
      "%@%",
      "_@_",
      "'",
      "' or '1'='1",
      '\'; drop table "user"; --',
      "\u0000",
      "a\u0000@example.org",
      "x".repeat(100_000),
      `${"a".repeat(320)}@b`,
      "a@b\ud800",
    ];
    for (const s of strings) {
      const label = s.slice(0, 40);
      expect(await UserRepo.getByEmail(t.db, s), label).toBeUndefined();
      expect(await UserRepo.getCredentials(t.db, s), label).toBeUndefined();
      expect(await UserRepo.findByExternalIdentity(t.db, { providerId: s, externalId: s }), label).toBeUndefined();
      expect(
        await UserRepo.findByExternalIdentity(t.db, { providerId: "github", externalId: s }),
        label,
      ).toBeUndefined();
    }
    // Writes of what no row may hold are refused before any statement.
    const refused: Array<[string, () => Promise<unknown>]> = [
      ["create \\0 email", () => UserRepo.create(t.db, { email: "a\u0000@example.org" })],
      ["create huge email", () => UserRepo.create(t.db, { email: `${"a".repeat(100_000)}@example.org` })],
      ["create \\0 name", () => UserRepo.create(t.db, { email: "n@example.org", name: "\u0000" })],
      ["create lone surrogate", () => UserRepo.create(t.db, { email: "n@example.org", name: "\ud800" })],
      ["create % as hash", () => UserRepo.create(t.db, { email: "n@example.org", passwordHash: "%" })],
      ["create SQL as hash", () => UserRepo.create(t.db, { email: "n@example.org", passwordHash: "' or 1=1 --" })],
      ["setPasswordHash \\0", () => UserRepo.setPasswordHash(t.db, u.userId, "$argon2id$\u0000")],
      ["link \\0", () => UserRepo.link(t.db, u.userId, { providerId: "github", externalId: "\u0000" })],
      ["link huge", () => UserRepo.link(t.db, u.userId, { providerId: "github", externalId: "x".repeat(100_000) })],
      ["unlink \\0", () => UserRepo.unlink(t.db, u.userId, "\u0000")],
      ["issue key \\0 name", () => ApiKeyRepo.issue(t.db, { userId: u.userId, name: "\u0000" })],
      ["issue key huge name", () => ApiKeyRepo.issue(t.db, { userId: u.userId, name: "x".repeat(100_000) })],
      ["issue key SQL user", () => ApiKeyRepo.issue(t.db, { userId: "' or 1=1 --", name: "x" })],
      ["revoke key %", () => ApiKeyRepo.revoke(t.db, u.userId, "%")],
      ["issue token SQL user", () => RefreshTokenRepo.issue(t.db, { userId: "'; --" })],
      ["revokeAll \\0", () => RefreshTokenRepo.revokeAllForUser(t.db, "\u0000")],
      ["get \\0", () => UserRepo.get(t.db, "\u0000")],
      ["delete SQL", () => UserRepo.delete(t.db, "' or 1=1 --")],
      ["getByEmail non-string", () => UserRepo.getByEmail(t.db, 42 as unknown as string)],
    ];
    for (const [label, call] of refused) {
      expect(await errorOf(call), label).toBeInstanceOf(InvalidInputError);
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe("deleting a user", () => {
  it("removes its identity links, refresh tokens and API keys, and nobody else's", async () => {
    const setUp = async (name: string) => {
      const u = await UserRepo.create(t.db, { email: `${name}-${randomUUID()}@example.org` });
      await UserRepo.link(t.db, u.userId, { providerId: "github", externalId: `${name}-gh` });
      await UserRepo.link(t.db, u.userId, { providerId: "oidc", externalId: `${name}-sub` });
      const key = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "k" });
      const token = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
      const rotated = await RefreshTokenRepo.rotate(t.db, token.token);
      return { u, key, rotated };
    };
    const gone = await setUp("gone");
    const kept = await setUp("kept");
    const counts = async (userId: string) => {
      const r = await t.db.execute<{ links: number; tokens: number; keys: number }>(sql`
        select (select count(*)::int from user_auth_link where user_id = ${userId}) as links,
               (select count(*)::int from refresh_token where user_id = ${userId}) as tokens,
               (select count(*)::int from api_key where user_id = ${userId}) as keys`);
      return r.rows[0];
    };
    expect(await counts(gone.u.userId)).toEqual({ links: 2, tokens: 2, keys: 1 });
    await t.db.transaction((tx) => UserRepo.delete(tx, gone.u.userId));
    expect(await counts(gone.u.userId)).toEqual({ links: 0, tokens: 0, keys: 0 });
    expect(await counts(kept.u.userId)).toEqual({ links: 2, tokens: 2, keys: 1 });
    expect(await ApiKeyRepo.verify(t.db, gone.key.key)).toBeUndefined();
    expect(await RefreshTokenRepo.rotate(t.db, gone.rotated?.token)).toBeUndefined();
    expect(
      await UserRepo.findByExternalIdentity(t.db, { providerId: "github", externalId: "gone-gh" }),
    ).toBeUndefined();
    expect((await ApiKeyRepo.verify(t.db, kept.key.key))?.user.userId).toBe(kept.u.userId);
  });
});
