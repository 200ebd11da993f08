/**
 * Section 7: claim and report latency with and without a concurrent
 * retention purge (`purgeFinished`) of a large finished history. One
 * template database holds the history (`finished` completed one-step jobs,
 * 40 days old, inserted set-based) and a ready backlog; every measurement
 * runs in a copy of it. Paced workers claim and report one step at a time,
 * each call timed; with the purge, they run until it has removed the whole
 * history; without, for `noneSeconds`.
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database, JobStepRepo, type PurgeCounts, purgeFinished } from "@stroem/repos";
import { claimOne, complete, registerWorker } from "./ours.js";
import { withClient } from "./server.js";
import { sql } from "./sql.js";
import { quantile } from "./stats.js";

export interface PurgeSize {
  /** Finished one-step jobs to purge (each a job and its step: definitions and results). */
  finished: number;
  /** Ready one-step jobs for the workers. */
  ready: number;
  workers: number;
  /** Each worker's pause after a claim and report, ms (a steady load rather than a saturating one). */
  paceMs: number;
  /** How long the run without a purge lasts. */
  noneSeconds: number;
  batchSize: number;
  /** `purgeFinished`'s pause between batches. */
  pauseMs: number;
}

/** Fills the (migrated) database at `url` with the history and the backlog, then VACUUM ANALYZE. */
export async function seedPurge(url: string, size: PurgeSize): Promise<void> {
  const db = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-seed" });
  try {
    const chunk = 250_000;
    for (let from = 0; from < size.finished; from += chunk) {
      const to = Math.min(size.finished, from + chunk);
      // A finished one-step job: its definitions (job, job_step) and results (job_result, step_result).
      await db.execute(sql`
        with j as materialized (
          select gen_random_uuid() as job_id, x.t as created_at, x.t + interval '1 second' as completed_at
          from (select now() - interval '40 days' - g * interval '1 second' as t
                from generate_series(${from + 1}::int, ${to}::int) g) x
        ), jobs as (
          insert into job (job_id, task_name, source_type, created_at)
          select job_id, 'history', 'api', created_at from j
        ), results as (
          insert into job_result (job_id, status, started_at, completed_at, steps_unfinished, steps_failed)
          select job_id, 'completed', created_at, completed_at, 0, 0 from j
        ), steps as (
          insert into job_step (job_id, step_name, action_name, action_type)
          select job_id, 'a', 'run', 'shell' from j
        )
        insert into step_result (job_id, step_name, action_type, status, attempts, started_at, completed_at,
                                 propagated, job_started_at)
        select job_id, 'a', 'shell', 'completed', 1, completed_at, completed_at, true, created_at from j`);
    }
    // Ready one-step jobs: a definition each and the step's live row (a one-step job has no job_live row).
    await db.execute(sql`
      with j as materialized (
        select gen_random_uuid() as job_id from generate_series(1, ${size.ready}::int)
      ), jobs as (
        insert into job (job_id, task_name, source_type) select job_id, 'queue', 'api' from j
      ), steps as (
        insert into job_step (job_id, step_name, action_name, action_type) select job_id, 'a', 'run', 'shell' from j
      )
      insert into step_live (job_id, step_name, action_type, route, status, ready_at)
      select job_id, 'a', 'shell', 'shell', 'ready', now() from j`);
    await db.execute(sql`vacuum analyze job`);
    await db.execute(sql`vacuum analyze job_step, step_live, step_result, job_result`);
  } finally {
    await db.$client.end();
  }
}

export interface LatencyRun {
  /** Per call, ms, warm-up excluded. */
  claim: number[];
  report: number[];
  /** What the purge removed and how long it took (the run with a purge). */
  purge?: PurgeCounts & { seconds: number };
  problems: string[];
}

/** One measurement in a fresh copy at `url`: paced workers, with or without a concurrent purge. */
export async function purgeLatency(url: string, size: PurgeSize, withPurge: boolean): Promise<LatencyRun> {
  const admin = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench" });
  const pools: Database[] = [];
  try {
    // Start from a clean slate: nothing dirty from the copy waiting for a checkpoint.
    await withClient(url, (c) => c.query("checkpoint")).catch(() => undefined);
    const claim: number[] = [];
    const report: number[] = [];
    const problems: string[] = [];
    let stop = false;
    let failures = 0;
    const warmUp = 20;
    // The clock (and the purge) start once every worker is past its warm-up.
    let warm = 0;
    let allWarm!: () => void;
    const warmed = new Promise<void>((r) => {
      allWarm = r;
    });
    const worker = async () => {
      const db = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-worker" });
      pools.push(db);
      const workerId = randomUUID();
      await registerWorker(db, workerId, ["shell"]);
      for (let n = 0; !stop; n++) {
        const t0 = performance.now();
        const step = await claimOne(db, ["shell"], workerId);
        const t1 = performance.now();
        if (!step) {
          problems.push("the ready backlog ran out before the run ended (raise its size)");
          stop = true;
          allWarm();
          return;
        }
        try {
          await complete(db, { jobId: step.jobId, stepName: step.stepName, workerId, attempt: step.attempts });
        } catch {
          failures++;
        }
        const t2 = performance.now();
        if (n === warmUp - 1 && ++warm === size.workers) allWarm();
        if (n >= warmUp) {
          claim.push(t1 - t0);
          report.push(t2 - t1);
        }
        if (size.paceMs > 0) await new Promise((r) => setTimeout(r, size.paceMs));
      }
    };
    let purge: LatencyRun["purge"];
    const running = Array.from({ length: size.workers }, worker);
    await Promise.race([warmed, Promise.all(running)]);
    if (withPurge) {
      const db = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-purge" });
      pools.push(db);
      const t0 = performance.now();
      const counts = await purgeFinished(db, {
        olderThan: 30 * 86_400_000,
        batchSize: size.batchSize,
        pauseMs: size.pauseMs,
      });
      purge = { ...counts, seconds: (performance.now() - t0) / 1000 };
      if (counts.jobs !== size.finished || counts.steps !== size.finished) {
        problems.push(`purge removed ${counts.jobs} jobs and ${counts.steps} steps, expected ${size.finished} of each`);
      }
    } else {
      await new Promise((r) => setTimeout(r, size.noneSeconds * 1000));
    }
    stop = true;
    await Promise.all(running);
    if (failures > 0) problems.push(`${failures} reports failed`);
    const left = await admin.execute<{ history: number; unfinished: number }>(sql`
      select (select count(*)::int from job where task_name = 'history') as history,
             (select count(*)::int from job_state where task_name = 'queue' and status <> 'pending'
                and status <> 'completed') as unfinished`);
    const row = left.rows[0];
    if (withPurge && row?.history !== 0) problems.push(`${row?.history} history jobs left after the purge`);
    if (!withPurge && row?.history !== size.finished) problems.push(`history changed without a purge`);
    if (row?.unfinished !== 0) problems.push(`${row?.unfinished} claimed jobs not completed`);
    const audit = await JobStepRepo.audit(admin);
    if (audit.claimedMoreThanOnce > 0) problems.push(`${audit.claimedMoreThanOnce} steps claimed twice`);
    if (claim.length === 0) problems.push("no call measured (the run was shorter than the warm-up)");
    return { claim, report, ...(purge ? { purge } : {}), problems };
  } finally {
    for (const p of pools) await p.$client.end();
    await admin.$client.end();
  }
}

export const p50 = (v: readonly number[]) => quantile(v, 0.5);
export const p95 = (v: readonly number[]) => quantile(v, 0.95);
