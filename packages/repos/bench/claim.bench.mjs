// Claim benchmark: `pnpm bench` at the root. Measures claims per second of
// JobStepRepo's claim against the design note's original claim, side by side
// in one run on the same data, so the ratios hold on a noisy shared machine.
//
// Server: STROEM_BENCH_DATABASE_URL (an existing server; a scratch database is
// created and dropped there), else an embedded PostgreSQL.
// Sizes: BENCH_READY (default 100000 waiting steps), BENCH_HISTORY (default
// 300000 finished steps), BENCH_CLAIMS (default 1000 claims per measurement).
import { randomUUID } from "node:crypto";
import { dropDatabase, startEmbeddedPostgres, withClient, withDatabase } from "@stroem/embedded-pg";
import { createPool, JobStepRepo, runMigrations, WorkerRepo } from "@stroem/repos";
import { sql } from "drizzle-orm";

const READY = Number(process.env.BENCH_READY ?? 100_000);
const HISTORY = Number(process.env.BENCH_HISTORY ?? 300_000);
const CLAIMS = Number(process.env.BENCH_CLAIMS ?? 1_000);

/** The design note's claim: ordered by primary key, served by nothing but the status index. */
const naiveClaim = (workerId) => sql`
  update job_step set status = 'running', worker_id = ${workerId}, started_at = now(), attempts = attempts + 1
  where (job_id, step_name) = (
    select job_id, step_name from job_step
    where status = 'ready' and action_type = any(${sql.param(["shell"])}::text[])
    order by job_id, step_name
    for update skip locked
    limit 1
  )
  returning *`;

async function main() {
  let admin;
  let stopServer = async () => {};
  if (process.env.STROEM_BENCH_DATABASE_URL) {
    admin = process.env.STROEM_BENCH_DATABASE_URL;
  } else {
    const server = await startEmbeddedPostgres();
    admin = server.url;
    stopServer = () => server.stop();
  }
  const name = `stroem_bench_${Date.now()}`;
  await withClient(admin, (c) => c.query(`create database ${name}`));
  const db = createPool(withDatabase(admin, name), { max: 12, statementTimeoutMs: 0 });
  try {
    await runMigrations(db);
    const workerId = randomUUID();
    await WorkerRepo.register(db, { workerId, name: "bench", capabilities: ["shell", "docker"] });
    const jobs = Array.from({ length: 100 }, () => randomUUID());
    for (const jobId of jobs) {
      await db.execute(sql`insert into job (job_id, task_name, source_type) values (${jobId}, 'bench', 'api')`);
    }
    const jobArray = sql.param(jobs);
    /** Adds `n` steps of `status` spread over the 100 jobs. */
    const addSteps = async (prefix, n, status) => {
      await db.execute(sql`
        insert into job_step (job_id, step_name, action_name, action_type, status, ready_at, attempts, completed_at)
        select (${jobArray}::uuid[])[1 + g % 100], ${prefix} || g, 'run', case when g % 4 = 0 then 'docker' else 'shell' end,
               ${status}, case when ${status} = 'ready' then now() + g * interval '1 microsecond' end,
               case when ${status} = 'ready' then 0 else 1 end,
               case when ${status} = 'ready' then null else now() end
        from generate_series(1, ${n}) g`);
      await db.execute(sql`analyze job_step`);
    };
    /** Puts what the last measurement claimed back, so each one starts from the same backlog. */
    const reset = () =>
      db.execute(
        sql`update job_step set status = 'ready', worker_id = null, started_at = null, attempts = 0 where status = 'running'`,
      );

    const measure = async (label, claimOnce, { connections = 1, claims = CLAIMS } = {}) => {
      await reset();
      const pools = Array.from({ length: connections }, () => createPool(withDatabase(admin, name), { max: 1 }));
      let left = claims;
      let got = 0;
      const started = process.hrtime.bigint();
      await Promise.all(
        pools.map(async (p) => {
          while (left > 0) {
            left -= 1;
            const n = await claimOnce(p); // not `got += await …`: that reads `got` before the await
            got += n;
          }
        }),
      );
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      await Promise.all(pools.map((p) => p.$client.end()));
      const rate = got / seconds;
      console.log(`  ${label.padEnd(58)} ${rate.toFixed(0).padStart(8)} steps/s  (${got} in ${seconds.toFixed(2)} s)`);
      return rate;
    };
    const single = (p) => JobStepRepo.claimReadyStep(p, ["shell"], workerId).then((s) => (s ? 1 : 0));
    const naive = (p) => p.execute(naiveClaim(workerId)).then((r) => r.rows.length);
    const batch = (n) => (p) => JobStepRepo.claimReadySteps(p, ["shell"], workerId, n).then((s) => s.length);

    /** Ours and the design note's, in the order A B B A, so neither profits from going second; means. */
    const pair = async (ours, theirs) => {
      const o1 = await measure("claimReadyStep (partial index, ready_at order)", ours);
      const t1 = await measure("design note's claim (status index, primary-key order)", theirs);
      const t2 = await measure("design note's claim (status index, primary-key order)", theirs);
      const o2 = await measure("claimReadyStep (partial index, ready_at order)", ours);
      return [(o1 + o2) / 2, (t1 + t2) / 2];
    };

    console.log(`Claim benchmark: ${READY} ready steps (3/4 shell), then ${HISTORY} finished steps added as history.`);
    await addSteps("r", READY, "ready");
    console.log(`\n${READY} ready, no history:`);
    const [a1, a2] = await pair(single, naive);
    const a3 = await measure("claimReadySteps, batches of 50", batch(50), { claims: CLAIMS / 50 });
    const a4 = await measure("claimReadyStep on 8 connections", single, { connections: 8 });

    await addSteps("h", HISTORY, "completed");
    console.log(`\n${READY} ready, ${HISTORY} finished:`);
    const [b1, b2] = await pair(single, naive);
    const b3 = await measure("claimReadySteps, batches of 50", batch(50), { claims: CLAIMS / 50 });
    const b4 = await measure("claimReadyStep on 8 connections", single, { connections: 8 });

    console.log("\nRatios (same run, same data):");
    console.log(`  ours / design note, no history (ABBA):     ${(a1 / a2).toFixed(1)}x`);
    console.log(`  ours / design note, with history (ABBA):   ${(b1 / b2).toFixed(1)}x`);
    console.log(`  ours with history / ours without:         ${(b1 / a1).toFixed(2)}x  (1.0 = history costs nothing)`);
    console.log(`  batch of 50 / single, no history:         ${(a3 / a1).toFixed(1)}x`);
    console.log(`  batch of 50 / single, with history:       ${(b3 / b1).toFixed(1)}x`);
    console.log(`  8 connections / 1, with history:          ${(b4 / b1).toFixed(1)}x  (2 cores)`);
    console.log(`  8 connections / 1, no history:            ${(a4 / a1).toFixed(1)}x`);
  } finally {
    await db.$client.end();
    await dropDatabase(admin, name).catch(() => undefined);
    await stopServer();
  }
}

await main();
