import { AUDIT_ACTIONS, AUTH_CONSTRAINTS, AUTH_LIMITS, user, userGroupMember } from "@stroem/schema";
import { and, asc, eq, inArray, sql } from "drizzle-orm";
import { type AuditOptions, auditEventSql } from "../audit-repo.js";
import { type Executor, transaction, translateErrors } from "../db.js";
import { InvalidInputError, UserNotFoundError } from "../errors.js";
import { requireUuid } from "../validate.js";
import { requireBoundedText } from "./secrets.js";

/**
 * User groups and the admin flag. Groups are names (1 to 200 characters);
 * what a group may see is the server's configuration, not the database's.
 * Every change writes its audit event (`user.groups_changed`,
 * `user.admin_changed`, by `options.actor`) in the same transaction.
 */

/** Most groups one user may be given in one `setGroups`, and most users `groupsOf` takes. */
export const MAX_GROUPS = 1000;

function groupName(field: string, value: unknown): string {
  return requireBoundedText(field, value, AUTH_LIMITS.groupNameMaxLength);
}

function groupList(field: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw new InvalidInputError(field, "must be an array of group names");
  if (value.length > MAX_GROUPS) throw new InvalidInputError(field, `must hold at most ${MAX_GROUPS} groups`);
  return [...new Set(value.map((g, i) => groupName(`${field}[${i}]`, g)))].sort();
}

const missingUser = (userId: string) => (e: { constraint?: string }) =>
  e.constraint === AUTH_CONSTRAINTS.groupMemberUserFk ? new UserNotFoundError(userId, { cause: e }) : undefined;

/** The user's groups, by name. */
export async function groupsOfUser(db: Executor, userId: string): Promise<string[]> {
  requireUuid("userId", userId);
  const rows = await translateErrors(db, () =>
    db
      .select({ g: userGroupMember.groupName })
      .from(userGroupMember)
      .where(eq(userGroupMember.userId, userId))
      .orderBy(asc(userGroupMember.groupName)),
  );
  return rows.map((r) => r.g);
}

/** The groups of many users in one query: every given user is a key (with `[]` when it has none). */
export async function groupsOf(db: Executor, userIds: readonly string[]): Promise<Map<string, string[]>> {
  if (!Array.isArray(userIds)) throw new InvalidInputError("userIds", "must be an array of user ids");
  if (userIds.length > MAX_GROUPS) throw new InvalidInputError("userIds", `must hold at most ${MAX_GROUPS} ids`);
  for (const [i, id] of userIds.entries()) requireUuid(`userIds[${i}]`, id);
  const out = new Map<string, string[]>(userIds.map((id) => [id, []]));
  if (userIds.length === 0) return out;
  const rows = await translateErrors(db, () =>
    db
      .select({ userId: userGroupMember.userId, g: userGroupMember.groupName })
      .from(userGroupMember)
      .where(inArray(userGroupMember.userId, [...userIds]))
      .orderBy(asc(userGroupMember.userId), asc(userGroupMember.groupName)),
  );
  for (const r of rows) out.get(r.userId)?.push(r.g);
  return out;
}

/** Every group that has a member, by name, with its member count. */
export async function listGroups(db: Executor): Promise<{ name: string; members: number }[]> {
  const rows = await translateErrors(db, () =>
    db
      .select({ name: userGroupMember.groupName, members: sql<number>`count(*)::int` })
      .from(userGroupMember)
      .groupBy(userGroupMember.groupName)
      .orderBy(asc(userGroupMember.groupName)),
  );
  return rows;
}

/**
 * Sets the user's groups to exactly `groups` (duplicates ignored), in one
 * transaction that locks the user's row first (concurrent changes of one
 * user's groups run one after the other, none lost): the groups it loses and
 * gains, and one `user.groups_changed` event with both lists (none when
 * nothing changed). Returns the lists. Throws, having written nothing:
 * `InvalidInputError`, `UserNotFoundError`.
 */
export async function setGroups(
  db: Executor,
  userId: string,
  groups: readonly string[],
  options: AuditOptions = {},
): Promise<{ added: string[]; removed: string[] }> {
  requireUuid("userId", userId);
  const wanted = groupList("groups", groups);
  return applyGroups(db, userId, () => wanted, options);
}

/** Adds the user to a group; returns whether it joined (false: already a member). As `setGroups`. */
export async function addToGroup(db: Executor, userId: string, group: string, options: AuditOptions = {}) {
  requireUuid("userId", userId);
  const g = groupName("group", group);
  const { added } = await applyGroups(db, userId, (now) => [...now, g], options);
  return added.length > 0;
}

/** Removes the user from a group; returns whether it was a member. As `setGroups`. */
export async function removeFromGroup(db: Executor, userId: string, group: string, options: AuditOptions = {}) {
  requireUuid("userId", userId);
  const g = groupName("group", group);
  const { removed } = await applyGroups(db, userId, (now) => now.filter((x) => x !== g), options);
  return removed.length > 0;
}

/** The one change of a user's groups: lock the user, read its groups, write the difference and its event. */
async function applyGroups(
  db: Executor,
  userId: string,
  next: (now: string[]) => string[],
  options: AuditOptions,
): Promise<{ added: string[]; removed: string[] }> {
  return transaction(db, async (tx) =>
    translateErrors(
      tx,
      async () => {
        const found = await tx
          .select({ id: user.userId })
          .from(user)
          .where(eq(user.userId, userId))
          .for("no key update");
        if (found.length === 0) throw new UserNotFoundError(userId);
        const now = await groupsOfUser(tx, userId);
        const wanted = [...new Set(next(now))].sort();
        const removed = now.filter((g) => !wanted.includes(g));
        const added = wanted.filter((g) => !now.includes(g));
        if (removed.length > 0) {
          await tx
            .delete(userGroupMember)
            .where(and(eq(userGroupMember.userId, userId), inArray(userGroupMember.groupName, removed)));
        }
        if (added.length > 0) {
          await tx.insert(userGroupMember).values(added.map((groupName) => ({ userId, groupName })));
        }
        if (added.length + removed.length > 0) {
          await tx.execute(
            auditEventSql({
              actor: options.actor,
              action: AUDIT_ACTIONS.userGroupsChanged,
              entityType: "user",
              entityId: userId,
              details: { added, removed },
            }),
          );
        }
        return { added, removed };
      },
      missingUser(userId),
    ),
  );
}

/**
 * Makes the user an admin or not, with a `user.admin_changed` event (none
 * when it already was). Returns whether it changed. Throws
 * `InvalidInputError`, `UserNotFoundError`.
 */
export async function setAdmin(db: Executor, userId: string, isAdmin: boolean, options: AuditOptions = {}) {
  requireUuid("userId", userId);
  if (typeof isAdmin !== "boolean") throw new InvalidInputError("isAdmin", "must be a boolean");
  return transaction(db, async (tx) =>
    translateErrors(tx, async () => {
      const found = await tx
        .select({ was: user.isAdmin })
        .from(user)
        .where(eq(user.userId, userId))
        .for("no key update");
      if (found.length === 0) throw new UserNotFoundError(userId);
      if (found[0]?.was === isAdmin) return false;
      await tx.update(user).set({ isAdmin }).where(eq(user.userId, userId));
      await tx.execute(
        auditEventSql({
          actor: options.actor,
          action: AUDIT_ACTIONS.userAdminChanged,
          entityType: "user",
          entityId: userId,
          details: { isAdmin },
        }),
      );
      return true;
    }),
  );
}
