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
const urlOf = (db: string) => {
  const u = new URL(adminUrl);
  u.pathname = `/${db}`;
  return u.toString();
};
const url = urlOf(name);
const v2 = `${name}_v2`;
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
  await admin(`drop database if exists ${v2} with (force)`);
});

/** A scratch copy of the migrations folder holding only those before `tag`. */
function migrationsBefore(tag: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "stroem-migrations-"));
  cpSync(MIGRATIONS_FOLDER, dir, { recursive: true });
  const journalPath = path.join(dir, "meta/_journal.json");
  const journal = JSON.parse(readFileSync(journalPath, "utf8"));
  const at = journal.entries.findIndex((e: { tag: string }) => e.tag === tag);
  expect(at).toBeGreaterThan(0);
  journal.entries = journal.entries.slice(0, at);
  writeFileSync(journalPath, JSON.stringify(journal));
  return dir;
}

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

describe("upgrading to the hot path v2 model (0027) with jobs in flight", () => {
  it("moves every job and step to its live or result row; jobs in flight finish, finished ones read the same", async () => {
    await admin(`create database ${v2}`);
    const folder = migrationsBefore("0027_hot_path_v2_tables");
    const db = createPool(urlOf(v2), { max: 2 });
    try {
      await runMigrations(db, { migrationsFolder: folder });
      const c = db.$client;
      const w = "00000000-0000-4000-8000-000000000001";
      const id = (n: string) => `00000000-0000-4000-8000-0000000000${n}`;
      const [single, done, dag, rescued] = [id("01"), id("02"), id("03"), id("04")];
      await c.query(`insert into worker (worker_id, name) values ($1, 'w')`, [w]);
      // A one-step job running (attempt 2, one retry recorded), a finished
      // one-step job, a diamond half done, a one-step job rescued for free once.
      await c.query(
        `insert into job (job_id, task_name, source_type, status, started_at, completed_at, steps_unfinished, steps_failed, output)
         values ($1, 'single', 'api', 'running', now() - interval '1 minute', null, 1, 0, null),
                ($2, 'done', 'api', 'completed', now() - interval '2 minutes', now() - interval '1 minute', 0, 0, '{"n":1}'),
                ($3, 'dag', 'api', 'running', now() - interval '1 minute', null, 3, 0, null),
                ($4, 'rescued', 'api', 'pending', null, null, 1, 0, null)`,
        [single, done, dag, rescued],
      );
      await c.query(
        `insert into job_step (job_id, step_name, action_name, status, depends_on, dependants, deps_unfinished, worker_id,
           started_at, completed_at, ready_at, attempts, output, max_retries, rescues, retry_history, propagated)
         values ($1, 'a', 'x', 'running', '{}', '{}', 0, $5, now(), null, now(), 2, null, 1, 0,
                 '[{"attempt":1,"workerId":"${w}","error":"boom","startedAt":null,"failedAt":"2026-01-01T00:00:00Z"}]', false),
                ($2, 'a', 'x', 'completed', '{}', '{}', 0, $5, now() - interval '2 minutes', now() - interval '1 minute', now(), 1, '{"ok":true}', 0, 0, '[]', true),
                ($3, 'a', 'x', 'completed', '{}', '{b,c}', 0, $5, now(), now(), now(), 1, '{"a":1}', 0, 0, '[]', true),
                ($3, 'b', 'x', 'running', '{a}', '{d}', 0, $5, now(), null, now(), 1, null, 0, 0, '[]', false),
                ($3, 'c', 'x', 'ready', '{a}', '{d}', 0, null, null, null, now(), 0, null, 0, 0, '[]', false),
                ($3, 'd', 'x', 'pending', '{b,c}', '{}', 2, null, null, null, null, 0, null, 0, 0, '[]', false),
                ($4, 'a', 'x', 'ready', '{}', '{}', 0, null, null, null, now(), 1, null, 3, 1, '[]', false)`,
        [single, done, dag, rescued, w],
      );

      const upgrade = await runMigrations(db);
      expect(upgrade.applied.slice(0, 2)).toEqual(["0027_hot_path_v2_tables", "0028_hot_path_v2_functions"]);
      const counts = await c.query<{ t: string; n: number }>(
        `select 'job_live' as t, count(*)::int as n from job_live union all select 'job_result', count(*)::int from job_result
         union all select 'step_live', count(*)::int from step_live union all select 'step_result', count(*)::int from step_result
         order by 1`,
      );
      // Live: the diamond's job row (the one-step jobs have none); its b, c, d and the two one-step jobs' steps.
      expect(Object.fromEntries(counts.rows.map((r) => [r.t, r.n]))).toEqual({
        job_live: 1,
        job_result: 1,
        step_live: 5,
        step_result: 2,
      });

      // Read through the repos as before the upgrade.
      expect(await JobRepo.get(db, done)).toMatchObject({ status: "completed", output: { n: 1 }, stepsUnfinished: 0 });
      expect((await JobStepRepo.getStepsForJob(db, done)).map((s) => [s.status, s.output])).toEqual([
        ["completed", { ok: true }],
      ]);
      expect(await JobRepo.get(db, single)).toMatchObject({ status: "running", stepsUnfinished: 1 });
      const [running] = await JobStepRepo.getStepsForJob(db, single);
      expect(running).toMatchObject({ status: "running", attempts: 2, workerId: w, maxRetries: 1 });
      expect(running?.retryHistory).toHaveLength(1);
      const [free] = await JobStepRepo.getStepsForJob(db, rescued);
      expect(free).toMatchObject({ status: "ready", rescues: 1, maxRetries: 3 });

      // The jobs in flight finish through the new report path.
      expect(await JobStepRepo.complete(db, { jobId: single, stepName: "a", workerId: w, attempt: 2 })).toMatchObject({
        jobStatus: "completed",
      });
      expect(await JobStepRepo.complete(db, { jobId: dag, stepName: "b", workerId: w, attempt: 1 })).toMatchObject({
        jobStatus: "running",
      });
      const claimed = await JobStepRepo.claimReadySteps(db, ["shell"], w, 5);
      expect(claimed.map((s) => [s.jobId, s.stepName, s.attempts]).sort()).toEqual(
        [
          [dag, "c", 1],
          [rescued, "a", 2],
        ].sort(),
      );
      expect(claimed.find((s) => s.jobId === dag)?.dependencyOutputs).toEqual({ a: { a: 1 } });
      expect(await JobStepRepo.complete(db, { jobId: dag, stepName: "c", workerId: w, attempt: 1 })).toMatchObject({
        promoted: ["d"],
      });
      await JobStepRepo.claimReadySteps(db, ["shell"], w, 1);
      expect(await JobStepRepo.complete(db, { jobId: dag, stepName: "d", workerId: w, attempt: 1 })).toMatchObject({
        jobStatus: "completed",
      });
      expect(await JobStepRepo.complete(db, { jobId: rescued, stepName: "a", workerId: w, attempt: 2 })).toMatchObject({
        jobStatus: "completed",
      });
      const left = await c.query<{ n: number }>(
        "select (select count(*) from job_live) + (select count(*) from step_live) as n",
      );
      expect(Number(left.rows[0]?.n)).toBe(0);
      expect(
        (await c.query<{ status: string }>("select status from job_state order by job_id")).rows.map((r) => r.status),
      ).toEqual(["completed", "completed", "completed", "completed"]);
    } finally {
      await db.$client.end();
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
