import { randomUUID } from "node:crypto";
import { useTestDb } from "@stroem/testing/fixture";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { JobRepo, uuidv7, uuidv7Time } from "../src/index.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("uuidv7", () => {
  it("is a version 7, variant 10 UUID carrying the millisecond it was made in", () => {
    // Later than any id made so far in this process (an earlier time would borrow the last one's).
    const at = uuidv7Time(uuidv7()) + 1_000;
    const id = uuidv7(at);
    expect(id).toMatch(UUID);
    expect(uuidv7Time(id)).toBe(at);
  });

  it("sorts in the order it was made, within a millisecond too (as text and as Postgres sorts uuids: bytewise)", () => {
    const ids = Array.from({ length: 20_000 }, () => uuidv7());
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    // A clock that steps back does not make an id sort before an earlier one.
    const before = uuidv7();
    const back = uuidv7(Date.now() - 60_000);
    expect(back > before).toBe(true);
  });

  it("borrows the next millisecond when 4,096 ids are made in one", () => {
    const at = uuidv7Time(uuidv7()) + 1_000;
    const ids = Array.from({ length: 10_000 }, () => uuidv7(at));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(uuidv7Time(ids[0] as string)).toBe(at);
    expect(uuidv7Time(ids.at(-1) as string)).toBeGreaterThan(at);
  });
});

describe("job ids", () => {
  const t = useTestDb();

  it("are random (version 4) for now: time-ordered ones made batch claims' job updates non-HOT (see newJobId)", async () => {
    const ids = [
      await JobRepo.create(t.db, { taskName: "t", sourceType: "api" }),
      ...(await JobRepo.createMany(
        t.db,
        Array.from({ length: 20 }, () => ({
          job: { taskName: "t", sourceType: "api" as const },
          steps: [{ stepName: "s", actionName: "a", actionType: "shell" as const }],
        })),
      )),
    ];
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const { rows } = await t.db.execute<{ n: number }>(sql`select count(*)::int as n from job`);
    expect(rows[0]?.n).toBe(ids.length);
    expect(randomUUID()).not.toMatch(UUID);
  });
});
