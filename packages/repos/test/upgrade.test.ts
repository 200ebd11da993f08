import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { MIGRATIONS_FOLDER } from "@stroem/schema";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createPool, JobRepo, JobStepRepo, runMigrations } from "../src/index.js";

// An operator upgrades a database that ran the first stage (migration 0000
// only) with jobs in flight. The backfill of migration 0002 must give every
// step and job the counts that advancing relies on.

const { adminUrl } = inject("stroemPg");
const name = `stroem_upgrade_${Math.random().toString(36).slice(2, 10)}`;
const url = (() => {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
})();
const scratch = mkdtempSync(path.join(tmpdir(), "stroem-migrations-"));

const admin = async (sql: string) => {
  const c = new pg.Client(adminUrl);
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
};

afterAll(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await admin(`drop database if exists ${name} with (force)`);
});

describe("upgrading a first-stage database", () => {
  it("backfills the graph counts, and jobs in flight finish through the new report path", async () => {
    await admin(`create database ${name}`);
    // The migrations folder as the first stage shipped it: 0000 only.
    cpSync(MIGRATIONS_FOLDER, scratch, { recursive: true });
    const journalPath = path.join(scratch, "meta/_journal.json");
    const journal = JSON.parse(readFileSync(journalPath, "utf8"));
    journal.entries = journal.entries.slice(0, 1);
    writeFileSync(journalPath, JSON.stringify(journal));

    const db = createPool(url, { max: 2 });
    try {
      expect((await runMigrations(db, { migrationsFolder: scratch })).applied).toEqual(["0000_initial"]);
      // A diamond in flight: a completed (and advanced: b, c ready), b running, d pending.
      const c = db.$client;
      await c.query(`insert into worker (worker_id, name) values ('00000000-0000-4000-8000-000000000001', 'w')`);
      await c.query(`insert into job (job_id, task_name, source_type, status, started_at)
        values ('00000000-0000-4000-8000-0000000000aa', 'old', 'api', 'running', now())`);
      await c.query(`insert into job_step (job_id, step_name, action_name, status, depends_on, worker_id, started_at, completed_at, ready_at, attempts) values
        ('00000000-0000-4000-8000-0000000000aa', 'a', 'x', 'completed', '{}', '00000000-0000-4000-8000-000000000001', now(), now(), now(), 1),
        ('00000000-0000-4000-8000-0000000000aa', 'b', 'x', 'running', '{a}', '00000000-0000-4000-8000-000000000001', now(), null, now(), 1),
        ('00000000-0000-4000-8000-0000000000aa', 'c', 'x', 'ready', '{a}', null, null, null, now(), 0),
        ('00000000-0000-4000-8000-0000000000aa', 'd', 'x', 'pending', '{b,c}', null, null, null, null, 0)`);

      const upgrade = await runMigrations(db);
      expect(upgrade.applied.slice(0, 2)).toEqual(["0001_counters_and_invariants", "0002_advance_functions"]);
      expect(upgrade.applied).toEqual(upgrade.all.slice(1));
      const jobId = "00000000-0000-4000-8000-0000000000aa";
      const steps = await JobStepRepo.getStepsForJob(db, jobId);
      expect(steps.map((s) => [s.stepName, s.dependants, s.depsUnfinished])).toEqual([
        ["a", ["b", "c"], 0],
        ["b", ["d"], 1],
        ["c", ["d"], 1],
        ["d", [], 2],
      ]);

      const workerId = "00000000-0000-4000-8000-000000000001";
      expect(await JobStepRepo.complete(db, { jobId, stepName: "b", workerId, attempt: 1 })).toMatchObject({
        promoted: [],
        jobStatus: "running",
      });
      const [claimed] = await JobStepRepo.claimReadySteps(db, ["shell"], workerId, 1);
      expect(claimed?.stepName).toBe("c");
      expect(await JobStepRepo.complete(db, { jobId, stepName: "c", workerId, attempt: 1 })).toMatchObject({
        promoted: ["d"],
      });
      await JobStepRepo.claimReadySteps(db, ["shell"], workerId, 1);
      expect(await JobStepRepo.complete(db, { jobId, stepName: "d", workerId, attempt: 1 })).toMatchObject({
        jobStatus: "completed",
      });
      expect(await JobRepo.get(db, jobId)).toMatchObject({ status: "completed", stepsUnfinished: 0 });
    } finally {
      await db.$client.end();
    }
  });
});
