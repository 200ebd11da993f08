// node hot-ids.mjs random|v7: 10,000 one-step jobs with random or time-ordered ids, drained by one loop of
// claim 50 + reportMany; prints WAL per job and HOT updates of job and job_step. Needs `pnpm build` and a
// PostgreSQL at localhost:55432 (see README). The figures are in packages/repos/src/uuid7.ts (newJobId).
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../..", import.meta.url)).replace(/\/$/, "");
const { default: pg } = await import(`${root}/packages/repos/node_modules/pg/lib/index.js`);
const { drizzle } = await import(`${root}/packages/repos/node_modules/drizzle-orm/node-postgres/index.js`);
const { runMigrations, job } = await import(`${root}/packages/schema/dist/index.js`);
const { JobStepRepo, WorkerRepo, uuidv7 } = await import(`${root}/packages/repos/dist/index.js`);
const mode = process.argv[2];
const admin = new pg.Client({ connectionString: "postgres://postgres@localhost:55432/postgres" });
await admin.connect();
await admin.query("drop database if exists hot_" + mode);
await admin.query("create database hot_" + mode);
await admin.end();
const pool = new pg.Pool({ connectionString: `postgres://postgres@localhost:55432/hot_${mode}`, max: 4 });
const db = drizzle(pool);
await runMigrations(db);
const N = 10000;
const ids = Array.from({ length: N }, () => (mode === "v7" ? uuidv7() : randomUUID()));
for (let i = 0; i < N; i += 2000)
  await db
    .insert(job)
    .values(
      ids.slice(i, i + 2000).map((jobId) => ({ jobId, taskName: "bench", sourceType: "api", stepsUnfinished: 0 })),
    );
const steps = ids.map((jobId) => ({
  jobId,
  stepName: "only",
  actionName: "noop",
  actionType: "shell",
  status: "ready",
}));
for (let i = 0; i < N; i += 2000) await JobStepRepo.createSteps(db, steps.slice(i, i + 2000));
await pool.query("vacuum analyze");
const w = randomUUID();
await WorkerRepo.register(db, { workerId: w, name: "w", capabilities: ["shell"] });
await pool.query("select pg_stat_reset()");
const lsn0 = (await pool.query("select pg_current_wal_lsn() l")).rows[0].l;
let n = 0;
for (;;) {
  const got = await JobStepRepo.claimReadySteps(db, ["shell"], w, 50);
  if (got.length === 0) break;
  await JobStepRepo.reportMany(
    db,
    got.map((s) => ({ jobId: s.jobId, stepName: s.stepName, workerId: w, attempt: s.attempts, outcome: "completed" })),
  );
  n += got.length;
}
const lsn1 = (await pool.query("select pg_current_wal_lsn() l")).rows[0].l;
const wal = (await pool.query(`select pg_wal_lsn_diff('${lsn1}','${lsn0}') d`)).rows[0].d;
await new Promise((r) => setTimeout(r, 700));
const st = (
  await pool.query(
    "select relname, n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname in ('job','job_step') order by 1",
  )
).rows;
console.log(mode, n, "WAL/job", Math.round(wal / n), JSON.stringify(st));
await pool.end();
