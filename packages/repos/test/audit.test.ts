import { randomUUID } from "node:crypto";
import type { NewFlowStep } from "@stroem/schema";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { beforeEach, describe, expect, it } from "vitest";
import {
  ApiKeyRepo,
  AuditLogAppendOnlyError,
  AuditRepo,
  DuplicateEmailError,
  type Executor,
  InvalidInputError,
  InvalidTransitionError,
  JobRepo,
  JobStepRepo,
  recordAudit,
  translateError,
  UserRepo,
} from "../src/index.js";
import { errorOf, registerWorker } from "./helpers.js";

const t = useTestDb();

/** Empties the audit log the only way the trigger allows: the purge's setting, in a transaction. */
async function clearAudit(db: Executor = t.db) {
  await db.transaction(async (tx) => {
    await tx.execute(sql`set local stroem.audit_purge = 'on'`);
    await tx.execute(sql`delete from audit_event`);
  });
}

beforeEach(async () => {
  await t.db.execute(sql`delete from job`);
  await clearAudit();
});

const newJob = { taskName: "build", sourceType: "api" } as const;
const flow: NewFlowStep[] = [
  { stepName: "a", actionName: "x", actionType: "shell" },
  { stepName: "b", actionName: "x", actionType: "shell", dependsOn: ["a"] },
];

/** Every event, oldest first. */
async function events() {
  const r = await t.db.execute<{ action: string; actor_type: string; actor_id: string | null; entity_id: string }>(
    sql`select action, actor_type, actor_id, entity_type, entity_id, details from audit_event order by id`,
  );
  return r.rows;
}

const countEvents = async () =>
  (await t.db.execute<{ n: number }>(sql`select count(*)::int as n from audit_event`)).rows[0]?.n;

describe("audit events are written with the change they record", () => {
  it("job created: one event per job, by createWithSteps, createMany and create, with the actor given (default system)", async () => {
    const one = await JobRepo.createWithSteps(t.db, newJob, flow);
    const many = await JobRepo.createMany(
      t.db,
      [0, 1, 2].map((i) => ({ job: { ...newJob, workspace: `w${i}` }, steps: flow })),
      { actor: { type: "user", id: "alice" } },
    );
    const bare = await JobRepo.create(t.db, newJob, { actor: { type: "worker", id: "w-1" } });
    const rows = await events();
    expect(rows).toHaveLength(5);
    expect(rows[0]).toEqual({
      action: "job.created",
      actor_type: "system",
      actor_id: null,
      entity_type: "job",
      entity_id: one,
      details: { workspace: "default", taskName: "build", sourceType: "api", steps: 2 },
    });
    expect(
      rows
        .slice(1, 4)
        .map((r) => [r.entity_id, r.actor_type, r.actor_id])
        .sort(),
    ).toEqual(many.map((id) => [id, "user", "alice"]).sort());
    expect(rows[4]).toMatchObject({ entity_id: bare, actor_type: "worker", actor_id: "w-1" });
  });

  it("a rolled-back change leaves no event: a transaction that throws, and a createMany the database refuses", async () => {
    await expect(
      t.db.transaction(async (tx) => {
        await JobRepo.createWithSteps(tx, newJob, flow);
        await JobRepo.cancel(tx, await JobRepo.create(tx, newJob), { reason: "x" });
        expect((await tx.execute<{ n: number }>(sql`select count(*)::int as n from audit_event`)).rows[0]?.n).toBe(3);
        throw new Error("changed my mind");
      }),
    ).rejects.toThrow("changed my mind");
    expect(await countEvents()).toBe(0);
    expect(await JobRepo.countByStatus(t.db)).toMatchObject({ pending: 0, cancelled: 0 });

    // A statement that fails in the database (a step too many for its CHECK) writes neither jobs nor events.
    await t.db.execute(sql`alter table job_step add constraint no_zed check (step_name <> 'zed')`);
    try {
      await errorOf(() =>
        JobRepo.createMany(t.db, [
          { job: newJob, steps: flow },
          { job: newJob, steps: [{ stepName: "zed", actionName: "x", actionType: "shell" }] },
        ]),
      );
    } finally {
      await t.db.execute(sql`alter table job_step drop constraint no_zed`);
    }
    expect(await countEvents()).toBe(0);
  });

  it("job cancelled: one event with reason and steps; a repeated cancel and a refused one add none", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, newJob, flow);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await JobRepo.cancel(t.db, jobId, { reason: "superseded", actor: { type: "user", id: "bob" } });
    await JobRepo.cancel(t.db, jobId, { actor: { type: "user", id: "bob" } }); // already cancelled: no-op
    const done = await JobRepo.createWithSteps(t.db, newJob, [{ stepName: "a", actionName: "x", actionType: "shell" }]);
    await JobStepRepo.complete(t.db, { jobId: done, stepName: "a" });
    expect(await errorOf(() => JobRepo.cancel(t.db, done))).toBeInstanceOf(InvalidTransitionError);
    const cancels = (await events()).filter((e) => e.action === "job.cancelled");
    expect(cancels).toEqual([
      {
        action: "job.cancelled",
        actor_type: "user",
        actor_id: "bob",
        entity_type: "job",
        entity_id: jobId,
        details: { reason: "superseded", cancelled: ["b"], cancelRequested: ["a"] },
      },
    ]);
  });

  it("steps rescued and timed out: one event per step (and per job timed out), filed under the job", async () => {
    const rescued = await JobRepo.createWithSteps(t.db, newJob, [
      { stepName: "a", actionName: "x", actionType: "shell" },
    ]);
    const w = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w, 1);
    await t.db.execute(sql`update worker set last_heartbeat = now() - interval '1 hour' where worker_id = ${w}`);
    const r = await JobStepRepo.rescueStaleSteps(t.db, {
      staleAfterMs: 60_000,
      maxRescues: 0, // no free rescue: this one spends the step's (zero) retries and fails it
      actor: { type: "system", id: "reaper" },
    });
    expect(r.failed).toHaveLength(1);

    const slow = await JobRepo.createWithSteps(t.db, newJob, [
      { stepName: "a", actionName: "x", actionType: "shell", timeoutSecs: 5 },
    ]);
    const late = await JobRepo.createWithSteps(t.db, { ...newJob, timeoutSecs: 60 }, [
      { stepName: "a", actionName: "x", actionType: "docker" },
    ]);
    const w2 = await registerWorker(t.db);
    await JobStepRepo.claimReadySteps(t.db, ["shell"], w2, 1);
    await t.db.execute(sql`update step_live set started_at = now() - interval '1 minute' where job_id = ${slow}`);
    await t.db.execute(sql`update job set created_at = now() - interval '1 hour' where job_id = ${late}`);
    const swept = await JobStepRepo.sweepTimeouts(t.db);
    expect(swept.jobs).toEqual([late]);

    const rows = (await events()).filter((e) => e.action !== "job.created");
    expect(rows).toEqual([
      {
        action: "step.rescued",
        actor_type: "system",
        actor_id: "reaper",
        entity_type: "job",
        entity_id: rescued,
        details: { stepName: "a", workerId: w, attempt: 1, outcome: "failed" },
      },
      {
        action: "step.timed_out",
        actor_type: "system",
        actor_id: null,
        entity_type: "job",
        entity_id: slow,
        details: { stepName: "a", workerId: w2, attempt: 1, outcome: "failed" },
      },
      {
        action: "job.timed_out",
        actor_type: "system",
        actor_id: null,
        entity_type: "job",
        entity_id: late,
        details: { outcome: "failed" },
      },
    ]);
  });

  it("recordAudit writes in the caller's transaction; a bad event or actor is refused and writes nothing", async () => {
    await t.db.transaction(async (tx) => {
      await recordAudit(tx, {
        actor: { type: "user", id: "admin" },
        action: "user.created",
        entityType: "user",
        entityId: "carol",
        details: { role: "viewer" },
      });
    });
    await expect(
      t.db.transaction(async (tx) => {
        await recordAudit(tx, { action: "api_key.revoked", entityType: "api_key", entityId: "k1" });
        throw new Error("rollback");
      }),
    ).rejects.toThrow("rollback");
    expect(await events()).toEqual([
      {
        action: "user.created",
        actor_type: "user",
        actor_id: "admin",
        entity_type: "user",
        entity_id: "carol",
        details: { role: "viewer" },
      },
    ]);
    const bad: Array<[unknown, string]> = [
      [{ action: "Created!", entityType: "user", entityId: "x" }, "action"],
      [{ action: "user.created", entityType: "", entityId: "x" }, "entityType"],
      [{ action: "user.created", entityType: "user", entityId: "x", details: [1] }, "details"],
      [{ action: "user.created", entityType: "user", entityId: "x", actor: { type: "user" } }, "actor.id"],
      [{ action: "user.created", entityType: "user", entityId: "x", actor: { type: "robot", id: "r" } }, "actor.type"],
    ];
    for (const [event, field] of bad) {
      const e = await errorOf(() => recordAudit(t.db, event as AuditRepo.NewAuditEvent));
      expect(e).toBeInstanceOf(InvalidInputError);
      expect((e as InvalidInputError).field).toBe(field);
    }
    const e = await errorOf(() =>
      JobRepo.createWithSteps(t.db, newJob, flow, { actor: { type: "worker" } as AuditRepo.AuditActor }),
    );
    expect(e).toMatchObject({ name: "InvalidInputError", field: "actor.id" });
    expect(await errorOf(() => JobRepo.cancel(t.db, randomUUID(), { actor: "me" as never }))).toMatchObject({
      field: "actor",
    });
    expect(await countEvents()).toBe(1);
    expect(await JobRepo.countByStatus(t.db)).toMatchObject({ pending: 0 });
  });
});

describe("the audit log is append-only", () => {
  it("UPDATE, DELETE and TRUNCATE are refused by the database (AuditLogAppendOnlyError at the boundary)", async () => {
    await JobRepo.createWithSteps(t.db, newJob, flow);
    for (const [op, statement] of [
      ["UPDATE", sql`update audit_event set actor_id = 'mallory'`],
      ["DELETE", sql`delete from audit_event`],
      ["TRUNCATE", sql`truncate audit_event`],
    ] as const) {
      const raw = await errorOf(() => t.db.execute(statement));
      const e = translateError(raw);
      expect(e).toBeInstanceOf(AuditLogAppendOnlyError);
      expect(e).toMatchObject({ operation: op });
      expect(e.message).toContain("append-only");
    }
    // The purge's setting lets a DELETE through, never an UPDATE or a TRUNCATE.
    for (const statement of [sql`update audit_event set actor_id = 'x'`, sql`truncate audit_event`]) {
      const e = await errorOf(() =>
        t.db.transaction(async (tx) => {
          await tx.execute(sql`set local stroem.audit_purge = 'on'`);
          await tx.execute(statement);
        }),
      );
      expect(translateError(e)).toBeInstanceOf(AuditLogAppendOnlyError);
    }
    expect(await events()).toHaveLength(1);
    expect((await events())[0]).toMatchObject({ actor_id: null });
    // The setting ends with its transaction.
    await t.db.transaction(async (tx) => {
      await tx.execute(sql`set local stroem.audit_purge = 'on'`);
    });
    expect(translateError(await errorOf(() => t.db.execute(sql`delete from audit_event`)))).toBeInstanceOf(
      AuditLogAppendOnlyError,
    );
    expect(await countEvents()).toBe(1);
  });
});

describe("AuditRepo.list", () => {
  /** `n` events in `n` transactions, for entity `job-<i>`. */
  async function record(n: number, extra: Partial<AuditRepo.NewAuditEvent> = {}) {
    for (let i = 0; i < n; i++) {
      await recordAudit(t.db, { action: "job.created", entityType: "job", entityId: `job-${i}`, ...extra });
    }
  }

  it("pages newest first with a cursor; events written between pages neither repeat nor shift them", async () => {
    await record(25);
    // Seven events of one transaction share occurred_at: the id breaks the tie.
    await t.db.transaction(async (tx) => {
      for (let i = 0; i < 7; i++) {
        await recordAudit(tx, { action: "job.cancelled", entityType: "job", entityId: `tied-${i}` });
      }
    });
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await AuditRepo.list(t.db, { limit: 4, ...(cursor ? { cursor } : {}) });
      seen.push(...page.events.map((e) => e.entityId));
      cursor = page.nextCursor;
      pages++;
      if (pages === 2) await record(5, { action: "job.timed_out" }); // arrive while paging
    } while (cursor);
    expect(pages).toBe(8);
    expect(seen).toEqual([
      ...Array.from({ length: 7 }, (_, i) => `tied-${6 - i}`),
      ...Array.from({ length: 25 }, (_, i) => `job-${24 - i}`),
    ]);
    // A new first page starts with them.
    const first = await AuditRepo.list(t.db, { limit: 5 });
    expect(first.events.map((e) => e.action)).toEqual(Array(5).fill("job.timed_out"));
    expect(first.events[0]?.occurredAt).toBeInstanceOf(Date);
    expect(typeof first.events[0]?.id).toBe("number");
  });

  it("filters by actor, action, entity and time, alone and together", async () => {
    await record(3, { actor: { type: "user", id: "alice" } });
    await record(2, { actor: { type: "user", id: "bob" }, action: "job.cancelled" });
    await record(1, { actor: { type: "worker", id: "w1" }, action: "step.rescued" });
    const ids = async (q: Omit<AuditRepo.ListAuditEvents, "limit">) =>
      (await AuditRepo.list(t.db, { limit: 100, ...q })).events.map((e) => `${e.actorId}:${e.action}:${e.entityId}`);
    expect(await ids({ actorType: "user", actorId: "alice" })).toEqual([
      "alice:job.created:job-2",
      "alice:job.created:job-1",
      "alice:job.created:job-0",
    ]);
    expect(await ids({ actorType: "worker" })).toEqual(["w1:step.rescued:job-0"]);
    expect(await ids({ action: "job.cancelled" })).toEqual(["bob:job.cancelled:job-1", "bob:job.cancelled:job-0"]);
    expect(await ids({ entityType: "job", entityId: "job-1" })).toEqual([
      "bob:job.cancelled:job-1",
      "alice:job.created:job-1",
    ]);
    expect(await ids({ entityType: "job", entityId: "job-0", actorType: "user", action: "job.created" })).toEqual([
      "alice:job.created:job-0",
    ]);
    expect(await ids({ entityType: "user" })).toEqual([]);
    const all = (await AuditRepo.list(t.db, { limit: 100 })).events;
    expect(all).toHaveLength(6);
    const mid = all[2]?.occurredAt as Date; // bob's first event
    const after = await AuditRepo.list(t.db, { limit: 100, from: mid });
    expect(after.events.every((e) => e.occurredAt >= mid)).toBe(true);
    const before = await AuditRepo.list(t.db, { limit: 100, to: new Date(mid.getTime() + 1) });
    expect(before.events.every((e) => e.occurredAt < new Date(mid.getTime() + 1))).toBe(true);
    expect(after.events.length + before.events.length).toBeGreaterThanOrEqual(6);
    expect(await AuditRepo.list(t.db, { limit: 10, from: new Date(Date.now() + 3_600_000) })).toEqual({ events: [] });
  });

  it("refuses bad filters with InvalidInputError naming the field", async () => {
    await record(2);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ limit: 0 }, "limit"],
      [{ limit: 1001 }, "limit"],
      [{ limit: 10, actorType: "robot" }, "actorType"],
      [{ limit: 10, actorId: "alice" }, "actorId"],
      [{ limit: 10, entityId: "job-1" }, "entityId"],
      [{ limit: 10, entityType: "" }, "entityType"],
      [{ limit: 10, from: "yesterday" }, "from"],
      [{ limit: 10, to: new Date("nope") }, "to"],
      [{ limit: 10, from: new Date(2030, 0, 2), to: new Date(2030, 0, 1) }, "from"],
      [{ limit: 10, cursor: "not-a-cursor" }, "cursor"],
      [{ limit: 10, cursor: Buffer.from('["x","1"]').toString("base64url") }, "cursor"],
      [{ limit: 10, actor: "alice" }, "actor"],
    ];
    for (const [query, field] of cases) {
      const e = await errorOf(() => AuditRepo.list(t.db, query as unknown as AuditRepo.ListAuditEvents));
      expect(e, JSON.stringify(query)).toBeInstanceOf(InvalidInputError);
      expect((e as InvalidInputError).field).toBe(field);
    }
  });

  it("only reads: works in a READ ONLY transaction and on a read-only session", async () => {
    await record(3);
    const page = await t.db.transaction((tx) => AuditRepo.list(tx, { limit: 2 }), { accessMode: "read only" });
    expect(page.events).toHaveLength(2);
    const next = await t.db.transaction((tx) => AuditRepo.list(tx, { limit: 2, cursor: page.nextCursor as string }), {
      accessMode: "read only",
    });
    expect(next.events.map((e) => e.entityId)).toEqual(["job-0"]);
    if (t.pooler) return; // a session SET would leak to other clients of a transaction pooler
    const ro = t.openPool({ max: 1 });
    try {
      await ro.execute(sql`set default_transaction_read_only = on`);
      expect((await AuditRepo.list(ro, { limit: 10, entityType: "job", entityId: "job-2" })).events).toHaveLength(1);
      // The session really is read-only.
      expect(await errorOf(() => recordAudit(ro, { action: "x.y", entityType: "job", entityId: "z" }))).toMatchObject({
        code: "25006",
      });
    } finally {
      await ro.$client.end();
    }
  });

  it("walks its indexes newest first, without a sort (EXPLAIN)", async () => {
    await t.db.execute(sql`
      insert into audit_event (occurred_at, actor_type, action, entity_type, entity_id)
      select now() - g * interval '1 second', 'system', 'job.created', 'job', 'j' || (g % 500)
      from generate_series(1, 20000) g`);
    await t.db.execute(sql`analyze audit_event`);
    const plan = async (where: ReturnType<typeof sql>) =>
      (
        await t.db.execute<{ "QUERY PLAN": string }>(
          sql`explain select * from audit_event where ${where} order by occurred_at desc, id desc limit 50`,
        )
      ).rows
        .map((r) => r["QUERY PLAN"])
        .join("\n");
    const keyset = await plan(sql`(occurred_at, id) < (now(), 100000)`);
    expect(keyset).toContain("idx_audit_event_time");
    expect(keyset).not.toMatch(/Sort/);
    const entity = await plan(sql`entity_type = 'job' and entity_id = 'j7' and (occurred_at, id) < (now(), 100000)`);
    expect(entity).toContain("idx_audit_event_entity");
    expect(entity).not.toMatch(/Sort/);
  });
});

describe("users and API keys are audited with their change", () => {
  it("user created and deleted, API key issued and revoked: one event each, by the actor given; a refused change writes none", async () => {
    const admin = { type: "user" as const, id: randomUUID() };
    const alice = await UserRepo.create(t.db, { email: "alice@example.org", name: "Alice" }, { actor: admin });
    const { key, info } = await ApiKeyRepo.issue(t.db, { userId: alice.userId, name: "ci" });
    expect(await ApiKeyRepo.revoke(t.db, alice.userId, info.keyHash, { actor: admin })).toMatchObject({
      alreadyRevoked: false,
    });
    expect(await ApiKeyRepo.revoke(t.db, alice.userId, info.keyHash, { actor: admin })).toMatchObject({
      alreadyRevoked: true,
    });
    expect(await errorOf(() => UserRepo.create(t.db, { email: "ALICE@example.org" }))).toBeInstanceOf(
      DuplicateEmailError,
    );
    expect(
      await errorOf(() => UserRepo.create(t.db, { email: "bob@example.org" }, { actor: { type: "user" } as never })),
    ).toBeInstanceOf(InvalidInputError);
    await UserRepo.delete(t.db, alice.userId, { actor: admin });
    const { events } = await AuditRepo.list(t.db, { limit: 100 });
    const mine = events
      .filter((e) => e.entityType === "user" || e.entityType === "api_key")
      .map((e) => [e.action, e.entityId, e.actorType, e.actorId])
      .reverse();
    expect(mine).toEqual([
      ["user.created", alice.userId, "user", admin.id],
      ["api_key.issued", info.keyHash, "system", null],
      ["api_key.revoked", info.keyHash, "user", admin.id],
      ["user.deleted", alice.userId, "user", admin.id],
    ]);
    // The key itself is in no event.
    expect(JSON.stringify(events)).not.toContain(key.slice(key.length - 20));
    expect(await UserRepo.getByEmail(t.db, "bob@example.org")).toBeUndefined();
  });
});
