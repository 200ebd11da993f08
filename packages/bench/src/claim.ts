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

/** The design note's claim: ordered by primary key, served by nothing but the status index. */
const naiveClaim = (workerId: string) => sql`
  update job_step set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = attempts + 1
  where (job_id, step_name) = (
    select job_id, step_name from job_step
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
    await db.execute(sql`
      insert into job (job_id, task_name, source_type)
      select unnest(${sql.param(jobs)}::uuid[]), 'bench', 'api'`);
    const addSteps = async (prefix: string, n: number, status: "ready" | "completed") => {
      await db.execute(sql`
        insert into job_step (job_id, step_name, action_name, action_type, status, ready_at, attempts, completed_at)
        select (${sql.param(jobs)}::uuid[])[1 + g % 100], ${prefix} || g, 'run',
               case when g % 4 = 0 then 'docker' else 'shell' end, ${status},
               case when ${status} = 'ready' then now() + g * interval '1 microsecond' end,
               case when ${status} = 'ready' then 0 else 1 end,
               case when ${status} = 'ready' then null else now() end
        from generate_series(1, ${n}::int) g`);
      await db.execute(sql`analyze job_step`);
    };
    const reset = () =>
      db.execute(
        sql`update job_step set status = 'ready', worker_id = null, started_at = null, attempts = 0 where status = 'running'`,
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
