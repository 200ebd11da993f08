import { randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import {
  ApiKeyRepo,
  DuplicateEmailError,
  IdentityLinkConflictError,
  InvalidInputError,
  RefreshTokenRepo,
  UserNotFoundError,
  UserRepo,
} from "../src/index.js";
import { deferred, errorOf, waitFor } from "./helpers.js";

const t = useTestDb();

const ARGON = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
const BCRYPT = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";

async function userCount() {
  const r = await t.db.execute<{ n: number }>(sql`select count(*)::int as n from "user"`);
  return r.rows[0]?.n;
}

describe("UserRepo: users", () => {
  it("creates a user and finds it by id and by email in any case; the email keeps its case", async () => {
    const created = await UserRepo.create(t.db, { email: "Ada.Lovelace@Example.org", name: "Ada" });
    expect(created).toMatchObject({ email: "Ada.Lovelace@Example.org", name: "Ada", hasPassword: false });
    expect(created.createdAt).toBeInstanceOf(Date);
    expect(await UserRepo.get(t.db, created.userId)).toEqual(created);
    expect(await UserRepo.getByEmail(t.db, "ada.lovelace@example.org")).toEqual(created);
    expect(await UserRepo.getByEmail(t.db, "ADA.LOVELACE@EXAMPLE.ORG")).toEqual(created);
    // Never a pattern: % and _ are plain characters.
    expect(await UserRepo.getByEmail(t.db, "%@example.org")).toBeUndefined();
    expect(await UserRepo.getByEmail(t.db, "ada_lovelace@example.org")).toBeUndefined();
    expect(await UserRepo.get(t.db, randomUUID())).toBeUndefined();
  });

  it("refuses a second user with the same email in another case, and writes nothing", async () => {
    await UserRepo.create(t.db, { email: "grace@example.org" });
    const before = await userCount();
    const error = await errorOf(() => UserRepo.create(t.db, { email: "GRACE@example.ORG", name: "other" }));
    expect(error).toBeInstanceOf(DuplicateEmailError);
    expect((error as DuplicateEmailError).email).toBe("GRACE@example.ORG");
    expect(await userCount()).toBe(before);
    // Inside a caller's transaction the error is the same.
    const inTx = await errorOf(() => t.db.transaction((tx) => UserRepo.create(tx, { email: "grace@EXAMPLE.org" })));
    expect(inTx).toBeInstanceOf(DuplicateEmailError);
    expect(await userCount()).toBe(before);
  });

  it("refuses malformed emails, names and password hashes before writing", async () => {
    const before = await userCount();
    const bad: unknown[] = [
      { email: "" },
      { email: "no-at-sign" },
      { email: "@example.org" },
      { email: "a@" },
      { email: "two words@example.org" },
      { email: "nul\u0000@example.org" },
      { email: "a\nb@example.org" },
      { email: `${"a".repeat(320)}@example.org` },
      { email: 42 },
      { email: "ok@example.org", name: "" },
      { email: "ok@example.org", name: "x".repeat(201) },
      { email: "ok@example.org", name: "nul\u0000" },
      { email: "ok@example.org", passwordHash: "correct horse battery staple" },
      { email: "ok@example.org", passwordHash: "hunter2" },
      { email: "ok@example.org", passwordHash: `$argon2id$${"x".repeat(1100)}` },
      null,
    ];
    for (const input of bad) {
      const error = await errorOf(() => UserRepo.create(t.db, input as UserRepo.NewUser));
      expect(error, JSON.stringify(input)).toBeInstanceOf(InvalidInputError);
    }
    expect(await userCount()).toBe(before);
    // A quote is a legal email character and is stored as given.
    const quoted = await UserRepo.create(t.db, { email: "o'brien@example.org", name: '\'; drop table "user"; --' });
    expect(await UserRepo.getByEmail(t.db, "O'Brien@example.org")).toEqual(quoted);
    expect(quoted.name).toBe('\'; drop table "user"; --');
  });

  it("stores the password hash it is given and hands it out only through getCredentials / getPasswordHash", async () => {
    const u = await UserRepo.create(t.db, { email: "hash@example.org", passwordHash: ARGON });
    expect(u.hasPassword).toBe(true);
    expect(Object.keys(u)).not.toContain("passwordHash");
    expect(await UserRepo.getCredentials(t.db, "HASH@example.org")).toEqual({ user: u, passwordHash: ARGON });
    expect(await UserRepo.getCredentials(t.db, "nobody@example.org")).toBeUndefined();
    await UserRepo.setPasswordHash(t.db, u.userId, BCRYPT);
    expect(await UserRepo.getPasswordHash(t.db, u.userId)).toBe(BCRYPT);
    await UserRepo.setPasswordHash(t.db, u.userId, null);
    expect(await UserRepo.getPasswordHash(t.db, u.userId)).toBeNull();
    expect((await UserRepo.get(t.db, u.userId))?.hasPassword).toBe(false);

    expect(await errorOf(() => UserRepo.setPasswordHash(t.db, u.userId, "plaintext"))).toBeInstanceOf(
      InvalidInputError,
    );
    expect(await UserRepo.getPasswordHash(t.db, u.userId)).toBeNull();
    expect(await errorOf(() => UserRepo.setPasswordHash(t.db, randomUUID(), ARGON))).toBeInstanceOf(UserNotFoundError);
    expect(await errorOf(() => UserRepo.getPasswordHash(t.db, randomUUID()))).toBeInstanceOf(UserNotFoundError);
    expect(await errorOf(() => UserRepo.get(t.db, "' or 1=1 --"))).toBeInstanceOf(InvalidInputError);
  });

  it("the database refuses a plaintext password, an email without @, a token column that is not a hash", async () => {
    const id = randomUUID();
    const bad = [
      sql`insert into "user" (user_id, email, password_hash) values (${id}, 'x@example.org', 'hunter2')`,
      sql`insert into "user" (user_id, email) values (${id}, 'nobody')`,
    ];
    for (const statement of bad) {
      const error = await errorOf(() => t.db.execute(statement));
      expect(JSON.stringify(error.cause ?? error)).toMatch(/23514/);
    }
    expect(await UserRepo.get(t.db, id)).toBeUndefined();
  });

  it("lists users oldest first, a page at a time", async () => {
    const all = await UserRepo.list(t.db, { limit: 1000 });
    const page = await UserRepo.list(t.db, { limit: 2, offset: 1 });
    expect(page).toEqual(all.slice(1, 3));
    expect(await errorOf(() => UserRepo.list(t.db, { limit: 0 }))).toBeInstanceOf(InvalidInputError);
  });

  it("delete returns the user and throws UserNotFoundError the second time", async () => {
    const u = await UserRepo.create(t.db, { email: "gone@example.org" });
    expect(await UserRepo.delete(t.db, u.userId)).toEqual(u);
    expect(await UserRepo.get(t.db, u.userId)).toBeUndefined();
    expect(await errorOf(() => UserRepo.delete(t.db, u.userId))).toBeInstanceOf(UserNotFoundError);
  });
});

describe("UserRepo: external identities", () => {
  it("links, finds, repeats, refuses conflicts and unlinks", async () => {
    const alice = await UserRepo.create(t.db, { email: "alice@example.org" });
    const bob = await UserRepo.create(t.db, { email: "bob@example.org" });
    const gh = { providerId: "github", externalId: "12345" };

    expect(await UserRepo.link(t.db, alice.userId, gh)).toBe(true);
    expect(await UserRepo.link(t.db, alice.userId, gh)).toBe(false); // the same link again: a no-op
    expect(await UserRepo.findByExternalIdentity(t.db, gh)).toEqual(alice);
    expect(await UserRepo.findByExternalIdentity(t.db, { providerId: "github", externalId: "1234" })).toBeUndefined();
    expect(await UserRepo.findByExternalIdentity(t.db, { providerId: "github", externalId: "%" })).toBeUndefined();
    expect(await UserRepo.findByExternalIdentity(t.db, { providerId: "github", externalId: "\u0000" })).toBeUndefined();

    const taken = await errorOf(() => UserRepo.link(t.db, bob.userId, gh));
    expect(taken).toBeInstanceOf(IdentityLinkConflictError);
    expect((taken as IdentityLinkConflictError).reason).toBe("identity-linked-to-another-user");
    const other = await errorOf(() => UserRepo.link(t.db, alice.userId, { providerId: "github", externalId: "999" }));
    expect((other as IdentityLinkConflictError).reason).toBe("user-linked-to-another-identity");
    expect(
      await errorOf(() => UserRepo.link(t.db, randomUUID(), { providerId: "gitlab", externalId: "1" })),
    ).toBeInstanceOf(UserNotFoundError);
    for (const bad of [
      { providerId: "", externalId: "1" },
      { providerId: "github", externalId: "" },
      { providerId: "github", externalId: "x".repeat(513) },
      { providerId: "git\u0000hub", externalId: "1" },
    ]) {
      expect(await errorOf(() => UserRepo.link(t.db, bob.userId, bad))).toBeInstanceOf(InvalidInputError);
    }

    await UserRepo.link(t.db, alice.userId, { providerId: "oidc:corp", externalId: "alice-sub" });
    expect((await UserRepo.listLinks(t.db, alice.userId)).map((l) => [l.providerId, l.externalId])).toEqual([
      ["github", "12345"],
      ["oidc:corp", "alice-sub"],
    ]);
    expect(await UserRepo.listLinks(t.db, bob.userId)).toEqual([]);

    expect(await UserRepo.unlink(t.db, alice.userId, "github")).toBe(true);
    expect(await UserRepo.unlink(t.db, alice.userId, "github")).toBe(false);
    expect(await UserRepo.findByExternalIdentity(t.db, gh)).toBeUndefined();
    expect(await UserRepo.link(t.db, bob.userId, gh)).toBe(true);
    expect(await UserRepo.findByExternalIdentity(t.db, gh)).toEqual(bob);
  });
});

describe("UserRepo: races", () => {
  /** Waits until `n` sessions of this database wait for a lock. */
  const lockWaiters = (n: number) =>
    waitFor(async () => {
      const r = await t.db.execute<{ n: number }>(
        sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
      );
      return r.rows[0]?.n === n;
    }, 30_000);

  it("two creates of one email in different cases: one user, the other DuplicateEmailError", async () => {
    const [a, b] = [t.openPool({ max: 1 }), t.openPool({ max: 1 })];
    try {
      const inserted = deferred();
      const release = deferred();
      const first = a.transaction(async (tx) => {
        const u = await UserRepo.create(tx, { email: "race@example.org" });
        inserted.resolve();
        await release.promise;
        return u;
      });
      await inserted.promise;
      const second = errorOf(() => UserRepo.create(b, { email: "RACE@example.org" })); // waits on the unique index
      await lockWaiters(1);
      release.resolve();
      const winner = await first;
      expect(await second).toBeInstanceOf(DuplicateEmailError);
      expect(await UserRepo.getByEmail(t.db, "Race@Example.org")).toEqual(winner);
    } finally {
      await Promise.all([a.$client.end(), b.$client.end()]);
    }
  }, 60_000);

  it("two users linking one identity at once: one link, the other IdentityLinkConflictError", async () => {
    const alice = await UserRepo.create(t.db, { email: "race-alice@example.org" });
    const bob = await UserRepo.create(t.db, { email: "race-bob@example.org" });
    const id = { providerId: "github", externalId: "race-1" };
    const [a, b] = [t.openPool({ max: 1 }), t.openPool({ max: 1 })];
    try {
      const linked = deferred();
      const release = deferred();
      const first = a.transaction(async (tx) => {
        expect(await UserRepo.link(tx, alice.userId, id)).toBe(true);
        linked.resolve();
        await release.promise;
      });
      await linked.promise;
      const second = errorOf(() => UserRepo.link(b, bob.userId, id));
      await lockWaiters(1);
      release.resolve();
      await first;
      const error = await second;
      expect(error).toBeInstanceOf(IdentityLinkConflictError);
      expect((error as IdentityLinkConflictError).reason).toBe("identity-linked-to-another-user");
      expect(await UserRepo.findByExternalIdentity(t.db, id)).toEqual(alice);
      expect(await UserRepo.listLinks(t.db, bob.userId)).toEqual([]);
    } finally {
      await Promise.all([a.$client.end(), b.$client.end()]);
    }
  }, 60_000);
});

describe("UserRepo: in the caller's transaction (where an audit insert joins)", () => {
  it("create, link, issue and delete roll back with the transaction", async () => {
    const before = await userCount();
    const rolledBack = await errorOf(() =>
      t.db.transaction(async (tx) => {
        const u = await UserRepo.create(tx, { email: "tx@example.org" });
        await UserRepo.link(tx, u.userId, { providerId: "github", externalId: "tx" });
        await ApiKeyRepo.issue(tx, { userId: u.userId, name: "tx" });
        await RefreshTokenRepo.issue(tx, { userId: u.userId });
        await tx.execute(sql`select 1`); // an audit insert would go here
        throw new Error("the audit insert failed");
      }),
    );
    expect(rolledBack.message).toBe("the audit insert failed");
    expect(await userCount()).toBe(before);
    expect(await UserRepo.getByEmail(t.db, "tx@example.org")).toBeUndefined();
    const r = await t.db.execute<{ n: number }>(sql`
      select (select count(*) from user_auth_link where external_id = 'tx')
           + (select count(*) from api_key where name = 'tx')::int as n`);
    expect(Number(r.rows[0]?.n)).toBe(0);

    const kept = await UserRepo.create(t.db, { email: "tx-kept@example.org" });
    await errorOf(() =>
      t.db.transaction(async (tx) => {
        await UserRepo.delete(tx, kept.userId);
        throw new Error("the audit insert failed");
      }),
    );
    expect(await UserRepo.get(t.db, kept.userId)).toEqual(kept);
  });
});

describe("look-ups use their indexes", () => {
  it("getByEmail uses the lower(email) index, findByExternalIdentity the identity key, verify the key's primary key", async () => {
    await t.db.execute(sql`
      insert into "user" (user_id, email) select gen_random_uuid(), 'bulk' || g || '@Example.org' from generate_series(1, 5000) g`);
    await t.db.execute(sql`
      insert into user_auth_link (user_id, provider_id, external_id) select user_id, 'github', email from "user" where email like 'bulk%'`);
    await t.db.execute(sql`
      insert into api_key (key_hash, user_id, name, prefix)
      select encode(sha256(convert_to(email, 'UTF8')), 'hex'), user_id, 'bulk', 'stroem_ak_xxxx' from "user" where email like 'bulk%'`);
    await t.db.execute(sql`analyze "user"; analyze user_auth_link; analyze api_key`);
    // The statements exactly as the repos send them, captured from a pool of their own.
    const pool = t.openPool({ max: 1 });
    const sent: Array<{ text: string; values: unknown[] }> = [];
    const client = pool.$client as unknown as { query: (...args: unknown[]) => unknown };
    const query = client.query.bind(client);
    client.query = (config: unknown, ...rest: unknown[]) => {
      // Drizzle sends (config, values), runStatement ({ name?, text, values }).
      const c = (typeof config === "string" ? { text: config } : config) as { text?: string; values?: unknown[] };
      const values = c.values ?? (Array.isArray(rest[0]) ? rest[0] : []);
      if (c?.text) sent.push({ text: c.text, values });
      return query(config, ...rest);
    };
    try {
      const plan = async (call: () => Promise<unknown>) => {
        sent.length = 0;
        await call();
        const last = sent.at(-1);
        if (!last) throw new Error("no statement captured");
        const r = await t.db.$client.query(`explain (format text) ${last.text}`, last.values);
        return r.rows.map((row: Record<string, string>) => Object.values(row)[0]).join("\n");
      };
      expect(await plan(() => UserRepo.getByEmail(pool, "BULK42@example.org"))).toMatch(/user_email_lower_key/);
      expect(
        await plan(() =>
          UserRepo.findByExternalIdentity(pool, { providerId: "github", externalId: "bulk42@Example.org" }),
        ),
      ).toMatch(/user_auth_link_provider_id_external_id_key/);
      const verifyPlan = await plan(() => ApiKeyRepo.verify(pool, `stroem_ak_${"A".repeat(48)}`));
      expect(verifyPlan).toMatch(/api_key_pkey/);
      expect(verifyPlan).not.toMatch(/Seq Scan on api_key/);
    } finally {
      await pool.$client.end();
    }
  }, 60_000);
});
