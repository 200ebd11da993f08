import { randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { afterAll, describe, expect, it } from "vitest";
import {
  AuditRepo,
  createPool,
  type Database,
  GroupRepo,
  InvalidInputError,
  UserNotFoundError,
  UserRepo,
} from "../src/index.js";
import { errorOf } from "./helpers.js";

const t = useTestDb();
const pools: Database[] = [];
afterAll(async () => {
  await Promise.all(pools.map((p) => p.$client.end()));
});

const newUser = () => UserRepo.create(t.db, { email: `u-${randomUUID()}@example.org` });
const actor = { type: "user", id: "admin-1" } as const;

describe("user groups and the admin flag", () => {
  it("add, remove, set in one transaction with one event, list, groups of many users in one query", async () => {
    const [a, b, c] = [await newUser(), await newUser(), await newUser()];
    expect(await GroupRepo.addToGroup(t.db, a.userId, "ops", { actor })).toBe(true);
    expect(await GroupRepo.addToGroup(t.db, a.userId, "ops")).toBe(false);
    expect(await GroupRepo.setGroups(t.db, b.userId, ["dev", "ops", "dev"], { actor })).toEqual({
      added: ["dev", "ops"],
      removed: [],
    });
    expect(await GroupRepo.setGroups(t.db, b.userId, ["qa", "ops"])).toEqual({ added: ["qa"], removed: ["dev"] });
    expect(await GroupRepo.setGroups(t.db, b.userId, ["ops", "qa"])).toEqual({ added: [], removed: [] });
    expect(await GroupRepo.removeFromGroup(t.db, a.userId, "ops")).toBe(true);
    expect(await GroupRepo.removeFromGroup(t.db, a.userId, "ops")).toBe(false);
    const of = await GroupRepo.groupsOf(t.db, [a.userId, b.userId, c.userId]);
    expect(Object.fromEntries(of)).toEqual({ [a.userId]: [], [b.userId]: ["ops", "qa"], [c.userId]: [] });
    expect(await GroupRepo.listGroups(t.db)).toEqual(
      expect.arrayContaining([
        { name: "ops", members: 1 },
        { name: "qa", members: 1 },
      ]),
    );
    const { events } = await AuditRepo.list(t.db, { entityType: "user", entityId: b.userId, limit: 10 });
    // One event per change that changed something (the no-op set wrote none), newest first.
    expect(events.filter((e) => e.action === "user.groups_changed").map((e) => e.details)).toEqual([
      { added: ["qa"], removed: ["dev"] },
      { added: ["dev", "ops"], removed: [] },
    ]);
  });

  it("concurrent additions to one user's groups lose none (the user's row is locked first)", async () => {
    const u = await newUser();
    const [p, q] = [createPool(t.url, { max: 4, pooler: t.pooler }), createPool(t.url, { max: 4, pooler: t.pooler })];
    pools.push(p, q);
    const groups = Array.from({ length: 12 }, (_, i) => `g${String(i).padStart(2, "0")}`);
    await Promise.all(groups.map((g, i) => GroupRepo.addToGroup(i % 2 ? p : q, u.userId, g)));
    expect(await GroupRepo.groupsOfUser(t.db, u.userId)).toEqual(groups);
  });

  it("setAdmin: shown on the user, audited when it changes; bad input and unknown users refused", async () => {
    const u = await newUser();
    expect(u.isAdmin).toBe(false);
    expect(await GroupRepo.setAdmin(t.db, u.userId, true, { actor })).toBe(true);
    expect(await GroupRepo.setAdmin(t.db, u.userId, true)).toBe(false);
    expect((await UserRepo.get(t.db, u.userId))?.isAdmin).toBe(true);
    const { events } = await AuditRepo.list(t.db, { entityType: "user", entityId: u.userId, limit: 10 });
    expect(events.filter((e) => e.action === "user.admin_changed")).toMatchObject([
      { actorType: "user", actorId: "admin-1", details: { isAdmin: true } },
    ]);
    const ghost = randomUUID();
    expect(await errorOf(() => GroupRepo.setAdmin(t.db, ghost, true))).toBeInstanceOf(UserNotFoundError);
    expect(await errorOf(() => GroupRepo.setGroups(t.db, ghost, ["x"]))).toBeInstanceOf(UserNotFoundError);
    expect(await errorOf(() => GroupRepo.setGroups(t.db, u.userId, [""]))).toBeInstanceOf(InvalidInputError);
    expect(await errorOf(() => GroupRepo.addToGroup(t.db, u.userId, "x".repeat(201)))).toBeInstanceOf(
      InvalidInputError,
    );
    expect(await errorOf(() => GroupRepo.setAdmin(t.db, u.userId, "yes" as unknown as boolean))).toBeInstanceOf(
      InvalidInputError,
    );
    expect(await GroupRepo.groupsOfUser(t.db, u.userId)).toEqual([]);
    // A user's memberships go with the user.
    await GroupRepo.setGroups(t.db, u.userId, ["ops"]);
    await UserRepo.delete(t.db, u.userId);
    expect(Object.fromEntries(await GroupRepo.groupsOf(t.db, [u.userId]))).toEqual({ [u.userId]: [] });
  });
});
