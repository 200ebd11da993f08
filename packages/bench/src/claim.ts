/**
 * Claim throughput, ours against the design note's original claim (moved
 * here from `packages/repos/bench/claim.bench.mjs`; the figures in
 * `@stroem/repos`' README and `claimReadySteps`' doc come from it). One
 * database: `ready` waiting steps (3/4 shell) spread over 100 jobs, measured
 * A B B A on one connection; then `history` finished steps are added and it
 * is measured again. Between measurements the claimed steps are put back, so
 * each starts from the same backlog.
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database, JobStepRepo, WorkerRepo } from "@stroem/repos";
import { sql } from "./sql.js";
import { fmt, type Summary, summarize } from "./stats.js";

/**
 * The design note's claim: ordered by primary key (served by `step_live`'s
 * key, not by the claim's index in its order), with the production claim's
 * writes to the step's live row.
 */
const naiveClaim = (workerId: string) => sql`
  update step_live set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = attempts + 1,
    job_started_at = coalesce(job_started_at, now())
  where (job_id, step_name) = (
    select job_id, step_name from step_live
    where status = 'ready' and action_type = any(${sql.param(["shell"])}::text[])
    order by job_id, step_name
    for update skip locked
    limit 1
  )
  returning *`;

export interface ClaimPair {
  ours: Summary;
  naive: Summary;
  /** Ours in batches of 50, steps/s (one measurement). */
  batch: number;
}

export interface ClaimFigures {
  empty: ClaimPair;
  history: ClaimPair;
}

export async function claimComparison(
  url: string,
  size: { ready: number; history: number; claims: number },
  reps: number,
  log: (line: string) => void,
): Promise<ClaimFigures> {
  const db = createPool(url, { max: 2, statementTimeoutMs: 0, applicationName: "stroem-bench" });
  const conn = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-worker" });
  try {
    const workerId = randomUUID();
    await WorkerRepo.register(db, { workerId, name: "bench", capabilities: ["shell", "docker"] });
    const jobs = Array.from({ length: 100 }, () => randomUUID());
    // Jobs of many steps: each has its job_live row (pending until a claim starts it).
    await db.execute(sql`
      with j as (
        insert into job (job_id, task_name, source_type)
        select unnest(${sql.param(jobs)}::uuid[]), 'bench', 'api'
        returning job_id
      )
      insert into job_live (job_id, status) select job_id, 'pending' from j`);
    // Definitions, then the state: a live row per ready step, a result per finished one.
    const addSteps = async (prefix: string, n: number, status: "ready" | "completed") => {
      await db.execute(sql`
        with src as materialized (
          select (${sql.param(jobs)}::uuid[])[1 + g % 100] as job_id, ${prefix} || g as step_name, g,
                 case when g % 4 = 0 then 'docker' else 'shell' end as action_type
          from generate_series(1, ${n}::int) g
        ), definitions as (
          insert into job_step (job_id, step_name, action_name, action_type)
          select job_id, step_name, 'run', action_type from src
        )
        ${
          status === "ready"
            ? sql`insert into step_live (job_id, step_name, action_type, route, status, ready_at)
                select job_id, step_name, action_type, action_type, 'ready', now() + g * interval '1 microsecond' from src`
            : sql`insert into step_result (job_id, step_name, action_type, status, attempts, completed_at, propagated)
                select job_id, step_name, action_type, 'completed', 1, now(), true from src`
        }`);
      await db.execute(sql`
        update job_live l set steps_unfinished = (select count(*)::int from step_live s where s.job_id = l.job_id)`);
      await db.execute(sql`vacuum analyze job_step, step_live, step_result, job_live`);
    };
    const reset = () =>
      db.execute(
        sql`update step_live set status = 'ready', worker_id = null, started_at = null, attempts = 0,
              job_started_at = null
            where status = 'running'`,
      );
    const measure = async (claimOnce: (p: Database) => Promise<number>, claims: number) => {
      await reset();
      let got = 0;
      const t0 = performance.now();
      for (let i = 0; i < claims; i++) got += await claimOnce(conn);
      return got / ((performance.now() - t0) / 1000);
    };
    const ours = (p: Database) => JobStepRepo.claimReadyStep(p, ["shell"], workerId).then((s) => (s ? 1 : 0));
    const naive = (p: Database) => p.execute(naiveClaim(workerId)).then((r) => r.rows.length);
    const batch = (p: Database) => JobStepRepo.claimReadySteps(p, ["shell"], workerId, 50).then((s) => s.length);
    const pair = async (label: string): Promise<ClaimPair> => {
      const a: number[] = [];
      const b: number[] = [];
      for (let r = 0; r < reps; r++) {
        a.push(await measure(ours, size.claims));
        b.push(await measure(naive, size.claims));
        b.push(await measure(naive, size.claims));
        a.push(await measure(ours, size.claims));
      }
      const batchRate = await measure(batch, Math.max(1, Math.round(size.claims / 50)));
      log(
        `  claim ${label}: ours ${a.map(fmt).join(", ")}; design note ${b.map(fmt).join(", ")}; batch ${fmt(batchRate)}`,
      );
      return { ours: summarize(a), naive: summarize(b), batch: batchRate };
    };
    await addSteps("r", size.ready, "ready");
    const empty = await pair("no history");
    await addSteps("h", size.history, "completed");
    const history = await pair("with history");
    return { empty, history };
  } finally {
    await conn.$client.end();
    await db.$client.end();
  }
}
