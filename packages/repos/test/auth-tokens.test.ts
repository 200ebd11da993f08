import { createHash, randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  ApiKeyNotFoundError,
  ApiKeyRepo,
  InvalidInputError,
  RefreshTokenRepo,
  UserNotFoundError,
  UserRepo,
} from "../src/index.js";
import { deferred, errorOf, waitFor } from "./helpers.js";

const t = useTestDb();

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const newUser = () => UserRepo.create(t.db, { email: `${randomUUID()}@example.org` });

async function keyRow(keyHash: string) {
  const r = await t.db.execute<{ last_used_at: string | null; revoked_at: string | null }>(
    sql`select last_used_at, revoked_at from api_key where key_hash = ${keyHash}`,
  );
  return r.rows[0];
}

async function family(familyId: string) {
  const r = await t.db.execute<{ token_hash: string; revoked: boolean; replaced_by: string | null }>(
    sql`select token_hash, revoked_at is not null as revoked, replaced_by from refresh_token
        where family_id = ${familyId} order by created_at, token_hash`,
  );
  return r.rows;
}

describe("ApiKeyRepo", () => {
  it("issues a key once: a stroem_ak_ prefix and 288 random bits; stores only its SHA-256 and a display prefix", async () => {
    const u = await newUser();
    const { key, info } = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "ci" });
    expect(key).toMatch(/^stroem_ak_[A-Za-z0-9_-]{48}$/);
    expect(Buffer.from(key.slice("stroem_ak_".length), "base64url")).toHaveLength(36);
    expect(info).toMatchObject({
      keyHash: sha256(key),
      userId: u.userId,
      name: "ci",
      prefix: key.slice(0, 14),
      expiresAt: null,
      lastUsedAt: null,
      revokedAt: null,
    });
    const second = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "ci" });
    expect(second.key).not.toBe(key);
    expect(await ApiKeyRepo.list(t.db, u.userId)).toEqual(
      [second.info, info].sort(
        (a, b) => b.createdAt.getTime() - a.createdAt.getTime() || a.keyHash.localeCompare(b.keyHash),
      ),
    );
  });

  it("verify answers the owner and the key; refuses unknown, revoked and expired keys with undefined", async () => {
    const u = await newUser();
    const { key, info } = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "deploy" });
    const verified = await ApiKeyRepo.verify(t.db, key);
    expect(verified?.user).toEqual(u);
    expect(verified?.key).toMatchObject({ keyHash: info.keyHash, name: "deploy" });
    expect(verified?.key.lastUsedAt).toBeInstanceOf(Date);

    // The hash is an id, not a credential; a key one character off is unknown.
    expect(await ApiKeyRepo.verify(t.db, info.keyHash)).toBeUndefined();
    const flipped = key.slice(0, -1) + (key.endsWith("A") ? "B" : "A");
    expect(await ApiKeyRepo.verify(t.db, flipped)).toBeUndefined();

    const expiring = await ApiKeyRepo.issue(t.db, {
      userId: u.userId,
      name: "short",
      expiresAt: new Date(Date.now() + 3_600_000),
    });
    expect(await ApiKeyRepo.verify(t.db, expiring.key)).toBeDefined();
    await t.db.execute(
      sql`update api_key set expires_at = now() - interval '1 second' where key_hash = ${expiring.info.keyHash}`,
    );
    expect(await ApiKeyRepo.verify(t.db, expiring.key)).toBeUndefined();

    const revoked = await ApiKeyRepo.revoke(t.db, u.userId, info.keyHash);
    expect(revoked.alreadyRevoked).toBe(false);
    expect(revoked.key.revokedAt).toBeInstanceOf(Date);
    expect(await ApiKeyRepo.verify(t.db, key)).toBeUndefined();
    const again = await ApiKeyRepo.revoke(t.db, u.userId, info.keyHash);
    expect(again).toEqual({ key: revoked.key, alreadyRevoked: true });
    expect((await ApiKeyRepo.list(t.db, u.userId, { activeOnly: true })).map((k) => k.name)).toEqual(["short"]);
  });

  it("records last_used_at at most once a minute, also under concurrent verifies", async () => {
    const u = await newUser();
    const { key, info } = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "busy" });
    const first = await ApiKeyRepo.verify(t.db, key);
    const stamped = (await keyRow(info.keyHash))?.last_used_at;
    expect(stamped).not.toBeNull();
    // Within the minute: no write (the row's xmin does not change).
    const xmin = async () =>
      (await t.db.execute<{ x: string }>(sql`select xmin::text as x from api_key where key_hash = ${info.keyHash}`))
        .rows[0]?.x;
    const before = await xmin();
    const again = await Promise.all(Array.from({ length: 5 }, () => ApiKeyRepo.verify(t.db, key)));
    expect(again.every((v) => v?.key.lastUsedAt?.getTime() === first?.key.lastUsedAt?.getTime())).toBe(true);
    expect(await xmin()).toBe(before);
    expect((await keyRow(info.keyHash))?.last_used_at).toBe(stamped);

    // A minute later (moved back rather than waited for), one of many concurrent verifies writes it.
    await t.db.execute(
      sql`update api_key set last_used_at = now() - interval '61 seconds' where key_hash = ${info.keyHash}`,
    );
    const pools = [t.openPool({ max: 1 }), t.openPool({ max: 1 }), t.openPool({ max: 1 })];
    try {
      const moved = await xmin();
      const results = await Promise.all(pools.map((p) => ApiKeyRepo.verify(p, key)));
      expect(results.every((r) => r !== undefined)).toBe(true);
      const after = await xmin();
      expect(after).not.toBe(moved);
      const stamp = (await keyRow(info.keyHash))?.last_used_at;
      expect(new Date(stamp as string).getTime()).toBeGreaterThan(Date.now() - 60_000);
    } finally {
      await Promise.all(pools.map((p) => p.$client.end()));
    }
  });

  it("refuses bad issue and revoke input with typed errors and writes nothing", async () => {
    const u = await newUser();
    const other = await newUser();
    const { info } = await ApiKeyRepo.issue(t.db, { userId: u.userId, name: "mine" });
    const count = async () =>
      (await t.db.execute<{ n: number }>(sql`select count(*)::int as n from api_key`)).rows[0]?.n;
    const before = await count();
    for (const bad of [
      { userId: u.userId, name: "" },
      { userId: u.userId, name: "x".repeat(201) },
      { userId: u.userId, name: "a\u0000b" },
      { userId: u.userId, name: "past", expiresAt: new Date(Date.now() - 1000) },
      { userId: u.userId, name: "invalid date", expiresAt: new Date(Number.NaN) },
      { userId: "not-a-uuid", name: "x" },
    ]) {
      expect(await errorOf(() => ApiKeyRepo.issue(t.db, bad))).toBeInstanceOf(InvalidInputError);
    }
    expect(await errorOf(() => ApiKeyRepo.issue(t.db, { userId: randomUUID(), name: "x" }))).toBeInstanceOf(
      UserNotFoundError,
    );
    expect(await count()).toBe(before);
    // Another user's key is not found; a malformed id is bad input.
    expect(await errorOf(() => ApiKeyRepo.revoke(t.db, other.userId, info.keyHash))).toBeInstanceOf(
      ApiKeyNotFoundError,
    );
    expect(await errorOf(() => ApiKeyRepo.revoke(t.db, u.userId, "' or 1=1 --"))).toBeInstanceOf(InvalidInputError);
    expect((await keyRow(info.keyHash))?.revoked_at).toBeNull();
  });
});

describe("RefreshTokenRepo", () => {
  it("issues and rotates: each token works once, the successor is in the same family", async () => {
    const u = await newUser();
    const first = await RefreshTokenRepo.issue(t.db, { userId: u.userId, ttlSecs: 3600 });
    expect(first.token).toMatch(/^stroem_rt_[A-Za-z0-9_-]{43}$/);
    expect(first.expiresAt.getTime()).toBeGreaterThan(Date.now() + 3_500_000);
    const second = await RefreshTokenRepo.rotate(t.db, first.token);
    expect(second).toMatchObject({ userId: u.userId, familyId: first.familyId });
    expect(second?.token).not.toBe(first.token);
    expect(second?.expiresAt.getTime()).toBeGreaterThan(Date.now() + 29 * 86_400_000); // the default 30 days
    const third = await RefreshTokenRepo.rotate(t.db, second?.token, { ttlSecs: 60 });
    expect(third?.familyId).toBe(first.familyId);
    expect(await family(first.familyId)).toEqual([
      { token_hash: sha256(first.token), revoked: true, replaced_by: sha256(second?.token ?? "") },
      { token_hash: sha256(second?.token ?? ""), revoked: true, replaced_by: sha256(third?.token ?? "") },
      { token_hash: sha256(third?.token ?? ""), revoked: false, replaced_by: null },
    ]);
    // A second login is another family.
    const other = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    expect(other.familyId).not.toBe(first.familyId);
  });

  it("reuse of a retired token revokes the whole family, the live successor included", async () => {
    const u = await newUser();
    const first = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    const bystander = await RefreshTokenRepo.issue(t.db, { userId: u.userId }); // another session
    const second = await RefreshTokenRepo.rotate(t.db, first.token);
    expect(second).toBeDefined();
    expect(await RefreshTokenRepo.rotate(t.db, first.token)).toBeUndefined(); // reuse
    expect((await family(first.familyId)).every((r) => r.revoked)).toBe(true);
    expect(await RefreshTokenRepo.rotate(t.db, second?.token)).toBeUndefined();
    // No successor was created by the refused rotations, and the other session is untouched.
    expect(await family(first.familyId)).toHaveLength(2);
    expect(await RefreshTokenRepo.rotate(t.db, bystander.token)).toBeDefined();
  });

  it("two concurrent rotations of one token: exactly one succeeds, and the loser's reuse revokes the family", async () => {
    const u = await newUser();
    const issued = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    const [holder, a, b] = [t.openPool({ max: 1 }), t.openPool({ max: 1 }), t.openPool({ max: 1 })];
    try {
      // Hold the token's row lock so both rotations are in flight, waiting, before either runs.
      const locked = deferred();
      const release = deferred();
      const hold = holder.transaction(async (tx) => {
        await tx.execute(sql`select 1 from refresh_token where token_hash = ${sha256(issued.token)} for update`);
        locked.resolve();
        await release.promise;
      });
      await locked.promise;
      const racing = [RefreshTokenRepo.rotate(a, issued.token), RefreshTokenRepo.rotate(b, issued.token)];
      await waitFor(async () => {
        const r = await t.db.execute<{ n: number }>(
          sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
        );
        return r.rows[0]?.n === 2;
      }, 30_000);
      release.resolve();
      await hold;
      const results = await Promise.all(racing);
      const winners = results.filter((r) => r !== undefined);
      expect(winners).toHaveLength(1);
      expect(winners[0]?.familyId).toBe(issued.familyId);
      // One successor only; the loser presented a retired token, so the family is revoked.
      const rows = await family(issued.familyId);
      expect(rows).toHaveLength(2);
      expect(rows.every((r) => r.revoked)).toBe(true);
      expect(await RefreshTokenRepo.rotate(t.db, winners[0]?.token)).toBeUndefined();
    } finally {
      await Promise.all([holder, a, b].map((p) => p.$client.end()));
    }
  }, 60_000);

  it("refuses expired tokens, revokes a session or all of a user's, purges expired ones", async () => {
    const u = await newUser();
    const expired = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    await t.db.execute(
      sql`update refresh_token set expires_at = now() - interval '1 second' where family_id = ${expired.familyId}`,
    );
    expect(await RefreshTokenRepo.rotate(t.db, expired.token)).toBeUndefined();
    expect(await family(expired.familyId)).toEqual([
      { token_hash: sha256(expired.token), revoked: false, replaced_by: null },
    ]); // refused, nothing written

    const session = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    const rotated = await RefreshTokenRepo.rotate(t.db, session.token);
    expect(await RefreshTokenRepo.revoke(t.db, rotated?.token)).toBe(true);
    expect(await RefreshTokenRepo.revoke(t.db, rotated?.token)).toBe(false);
    expect(await RefreshTokenRepo.rotate(t.db, rotated?.token)).toBeUndefined();

    const a = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    const b = await RefreshTokenRepo.issue(t.db, { userId: u.userId });
    const stranger = await RefreshTokenRepo.issue(t.db, { userId: (await newUser()).userId });
    expect(await RefreshTokenRepo.revokeAllForUser(t.db, u.userId)).toBe(3); // a, b and the expired one
    expect(await RefreshTokenRepo.revokeAllForUser(t.db, u.userId)).toBe(0);
    expect(await RefreshTokenRepo.revokeAllForUser(t.db, randomUUID())).toBe(0);
    expect(await RefreshTokenRepo.rotate(t.db, a.token)).toBeUndefined();
    expect(await RefreshTokenRepo.rotate(t.db, b.token)).toBeUndefined();
    expect(await RefreshTokenRepo.rotate(t.db, stranger.token)).toBeDefined();

    const expiredCount = async () =>
      (await t.db.execute<{ n: number }>(sql`select count(*)::int as n from refresh_token where expires_at <= now()`))
        .rows[0]?.n;
    await t.db.execute(sql`update refresh_token set expires_at = now() - interval '1 day' where user_id = ${u.userId}`);
    const total = await expiredCount();
    expect(total).toBeGreaterThanOrEqual(5);
    expect(await RefreshTokenRepo.purgeExpired(t.db, { limit: 2 })).toBe(2);
    expect(await RefreshTokenRepo.purgeExpired(t.db)).toBe((total ?? 0) - 2);
    expect(await expiredCount()).toBe(0);
    expect(await RefreshTokenRepo.purgeExpired(t.db)).toBe(0);
  });

  it("refuses bad issue input with typed errors and writes nothing", async () => {
    const u = await newUser();
    const count = async () =>
      (await t.db.execute<{ n: number }>(sql`select count(*)::int as n from refresh_token`)).rows[0]?.n;
    const before = await count();
    for (const bad of [
      { userId: "x", ttlSecs: 60 },
      { userId: u.userId, ttlSecs: 0 },
      { userId: u.userId, ttlSecs: 1.5 },
      { userId: u.userId, ttlSecs: 400 * 86_400 },
    ]) {
      expect(await errorOf(() => RefreshTokenRepo.issue(t.db, bad))).toBeInstanceOf(InvalidInputError);
    }
    expect(await errorOf(() => RefreshTokenRepo.issue(t.db, { userId: randomUUID() }))).toBeInstanceOf(
      UserNotFoundError,
    );
    expect(await errorOf(() => RefreshTokenRepo.revokeAllForUser(t.db, "x"))).toBeInstanceOf(InvalidInputError);
    expect(await count()).toBe(before);
  });
});
