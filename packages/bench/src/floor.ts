/**
 * Section 8, "SQL alone": how fast each system's statements drain a flat
 * queue with no library around them, beside other row models. One harness
 * for all five: `workers` loops, each on one node-postgres
 * connection, named prepared statements, no validation and no row mapping
 * beyond node-postgres' own, so what differs is the SQL:
 *
 * - peer: graphile-worker 0.18's statements, as its `getJobs` builds them
 *   (one task identifier, its default named-queue clause, `returning *`;
 *   with a batch, its `distinct on` de-duplication) and as `completeJobs`
 *   sends them (`delete … where id = $1`; a batch: `… using unnest($1)`);
 * - ours: the statements `JobStepRepo` sends (the claim, then
 *   `stroem_finish_step` or `stroem_report_many`), from `@stroem/repos/internal`;
 * - model: the least a one-step job can cost in our row model: the
 *   production write set by hand (the claim's update of the step's live
 *   row, which starts the job; the report's guarded delete of that row with
 *   its `step_result` and the job's `job_result` appended, in one
 *   statement), without locking the job first (`stroem_finish_step` looks
 *   for a `job_live` row, locks the step's live row and looks for a
 *   `job_result` before writing) and without the claim's definitions,
 *   dependency outputs and start of jobs of several steps. Not a usable
 *   queue (a cancel could race such a report); a lower bound for any
 *   implementation of the model;
 * - row: the step's rows alone: the same claim, then the live row deleted
 *   and its result appended, no job row written (the model without the
 *   job's `job_result`: what that row costs, by difference);
 * - queue: graphile-worker's shape plus history: a narrow queue row claimed
 *   by UPDATE and deleted at the report, which inserts the job's outcome
 *   into an append-only history table in the same statement (tables of
 *   this section's own, `floor_queue` and `floor_history`, created in the
 *   measurement's database): what a redesign that keeps the history off the
 *   hot table could reach at best.
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database } from "@stroem/repos";
import { claim, FINISH_STEP, REPORT_MANY, runStatement } from "@stroem/repos/internal";
import * as bossPlans from "pg-boss/dist/plans.js";
import { graphileTaskId, remainingJobs, seedGraphile } from "./graphile.js";
import { installModel, MODELS, type Model, type ModelName } from "./models.js";
import { registerWorker } from "./ours.js";
import { BOSS_QUEUE, BOSS_SCHEMA, bossCheck, bossTable, seedBoss } from "./pgboss.js";
import { checkAllDone } from "./scenarios.js";
import { FLAT, type StepShape, seedJobs } from "./seed.js";
import { type Cost, startCost } from "./server.js";

export type FloorVariant = "peer" | "boss" | "ours" | "model" | "row" | "queue" | ModelName;

export const MODEL_NAMES: readonly ModelName[] = ["live", "append", "lean"];

const isModel = (v: FloorVariant): v is ModelName => (MODEL_NAMES as readonly string[]).includes(v);

/** The schema a candidate model's tables live in, in the measurement's database. */
export const modelSchema = (name: ModelName) => `hp_${name}`;

export interface FloorRun {
  /** Steps (for one-step jobs: jobs) per second, from the loops' start to the last report. */
  rate: number;
  cost: Cost;
  problems: string[];
  /** Candidate models: updates and HOT updates of the tables whose updates must be HOT. */
  hot?: { table: string; updates: number; hot: number }[];
}

/**
 * A claimed job: its key (for the exactly-once check) and what its report
 * needs: `jobId` is the row's id where the variant has no job id (peer, queue).
 */
interface Claimed {
  key: string;
  jobId: string;
  stepName: string;
  attempt: number;
}

interface Driver {
  claim(db: Database, worker: string, limit: number): Promise<Claimed[]>;
  report(db: Database, worker: string, jobs: readonly Claimed[]): Promise<void>;
}

/** Who the loops claim as: a shell worker without tags (the claim of one capability). */
const WORKER = { capabilities: ["shell"], tags: [] as string[], exclusive: false };

async function query<R>(db: Database, name: string, text: string, values: unknown[]): Promise<R[]> {
  const res = await db.$client.query({ name, text, values });
  return res.rows as R[];
}

const ours: Driver = {
  async claim(db, worker, limit) {
    const c = claim(WORKER, worker, limit);
    const rows = await runStatement<{ job_id: string; step_name: string; attempts: number }, typeof c.values>(
      db,
      c.statement,
      c.values,
    );
    return rows.map((r) => ({
      key: `${r.job_id}/${r.step_name}`,
      jobId: r.job_id,
      stepName: r.step_name,
      attempt: r.attempts,
    }));
  },
  async report(db, worker, jobs) {
    if (jobs.length === 1) {
      const j = jobs[0] as Claimed;
      const [row] = await runStatement<{ result: string }, NonNullable<typeof FINISH_STEP.values>>(db, FINISH_STEP, {
        jobId: j.jobId,
        stepName: j.stepName,
        outcome: "completed",
        output: null,
        error: null,
        workerId: worker,
        attempt: j.attempt,
        propagate: true,
      });
      if (row?.result !== "ok") throw new Error(`stroem_finish_step refused ${j.key}: ${row?.result}`);
      return;
    }
    const reports = JSON.stringify(
      jobs.map((j, i) => ({
        i,
        job_id: j.jobId,
        step_name: j.stepName,
        outcome: "completed",
        worker_id: worker,
        attempt: j.attempt,
      })),
    );
    const rows = await runStatement<{ result: string }, { reports: string }>(db, REPORT_MANY, { reports });
    const refused = rows.find((r) => r.result !== "ok");
    if (refused || rows.length !== jobs.length) throw new Error(`stroem_report_many refused: ${refused?.result}`);
  },
};

/**
 * The production claim's write set (`claimQuery` in @stroem/repos): the
 * step's live row moved to running, which starts a one-step job
 * (`job_started_at`); without the definitions' join, the dependency outputs
 * and the start of jobs of several steps (a one-step job has no `job_live` row).
 */
const modelClaim = (limit: number) => `
  with next as (
    select s.job_id, s.step_name from step_live s
    where s.status = 'ready' and s.route = 'shell' and s.ready_at <= now()
    order by s.ready_at, s.job_id, s.step_name
    limit ${limit}
    for update skip locked
  )
  update step_live s set status = 'running', worker_id = $1::uuid, started_at = now(), attempts = s.attempts + 1,
    job_started_at = coalesce(s.job_started_at, now())
  from next where s.job_id = next.job_id and s.step_name = next.step_name
  returning s.job_id, s.step_name, s.attempts`;

/**
 * The step's final write of `stroem_finish_step` (a success, propagated):
 * its live row deleted, guarded by worker and attempt, its last state
 * appended to `step_result`, for the rows of the CTE `claims` (job_id,
 * step_name, attempt; $worker the worker). Ends in the CTE `kept`.
 */
const finishSteps = (worker: string) => `
  gone as (
    delete from step_live s using claims c
    where s.job_id = c.job_id and s.step_name = c.step_name and s.status = 'running'
      and s.worker_id = ${worker}::uuid and s.attempts = c.attempt
    returning s.*
  ), kept as (
    insert into step_result (job_id, step_name, action_type, status, ready_at, worker_id, started_at, completed_at,
      output, error_message, attempts, rescues, max_retries, retry_history, deps_total, continue_on_failure,
      dependants, timeout_secs, deps_unfinished, deps_failed, deps_completed, propagated, cancel_requested_at,
      suspended_at, job_started_at)
    select g.job_id, g.step_name, g.action_type, 'completed', g.ready_at, g.worker_id, g.started_at, now(),
      null, null, g.attempts, g.rescues, g.max_retries, g.retry_history, g.deps_total, g.continue_on_failure,
      g.dependants, g.timeout_secs, g.deps_unfinished, g.deps_failed, g.deps_completed, true,
      g.cancel_requested_at, g.suspended_at, g.job_started_at
    from gone g
    returning job_id, job_started_at, started_at
  )`;

/** A one-step job's end in `stroem_finish_step`: its `job_result` row, for the steps the CTE `kept` finished. */
const modelSettle = `
  insert into job_result (job_id, status, started_at, steps_unfinished, steps_failed)
  select k.job_id, 'completed', coalesce(k.job_started_at, k.started_at, now()), 0, 0 from kept k
  returning job_id`;

const ONE = "claims as (select $1::uuid as job_id, $2::text as step_name, $3::int as attempt)";
const MANY = "claims as (select * from unnest($1::uuid[], $2::text[], $3::int[]) as u(job_id, step_name, attempt))";

const MODEL_REPORT_ONE = `with ${ONE}, ${finishSteps("$4")}${modelSettle}`;
const MODEL_REPORT_MANY = `with ${MANY}, ${finishSteps("$4")}${modelSettle}`;

const ROW_REPORT_ONE = `with ${ONE}, ${finishSteps("$4")} select job_id from kept`;
const ROW_REPORT_MANY = `with ${MANY}, ${finishSteps("$4")} select job_id from kept`;

/** The floor's claim, then `one` or `many` as the report (each must finish every job it is given). */
function claimThen(prefix: string, one: string, many: string): Driver {
  return {
    async claim(db, worker, limit) {
      const rows = await query<{ job_id: string; step_name: string; attempts: number }>(
        db,
        `floor_model_claim_${limit}`,
        modelClaim(limit),
        [worker],
      );
      return rows.map((r) => ({ key: r.job_id, jobId: r.job_id, stepName: r.step_name, attempt: r.attempts }));
    },
    async report(db, worker, jobs) {
      const rows =
        jobs.length === 1
          ? await query(db, `${prefix}_report_one`, one, [jobs[0]?.jobId, jobs[0]?.stepName, jobs[0]?.attempt, worker])
          : await query(db, `${prefix}_report_many`, many, [
              jobs.map((j) => j.jobId),
              jobs.map((j) => j.stepName),
              jobs.map((j) => j.attempt),
              worker,
            ]);
      if (rows.length !== jobs.length)
        throw new Error(`${prefix} report finished ${rows.length} of ${jobs.length} jobs`);
    },
  };
}

const model = claimThen("floor_model", MODEL_REPORT_ONE, MODEL_REPORT_MANY);
const row = claimThen("floor_row", ROW_REPORT_ONE, ROW_REPORT_MANY);

/** The queue variant's tables: a narrow queue (its claim index holds only unclaimed rows) and the history. */
const QUEUE_TABLES = `
  create table floor_queue (
    id bigint generated always as identity primary key,
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    ready_at timestamptz not null default now(),
    worker_id uuid,
    locked_at timestamptz,
    attempts integer not null default 0
  );
  create index floor_queue_claim on floor_queue (action_type, ready_at, id) where locked_at is null;
  create table floor_history (
    job_id uuid not null,
    step_name text not null,
    worker_id uuid not null,
    attempt integer not null,
    outcome text not null,
    started_at timestamptz not null,
    completed_at timestamptz not null,
    output jsonb,
    primary key (job_id, step_name, attempt)
  );`;

const queueClaim = (limit: number) => `
  with next as (
    select q.id from floor_queue q
    where q.locked_at is null and q.action_type = 'shell' and q.ready_at <= now()
    order by q.ready_at, q.id
    limit ${limit}
    for update skip locked
  )
  update floor_queue q set worker_id = $1::uuid, locked_at = now(), attempts = q.attempts + 1
  from next where q.id = next.id
  returning q.id, q.job_id, q.step_name, q.attempts`;

const QUEUE_REPORT = `
  with done as (
    delete from floor_queue q using unnest($1::bigint[]) as u(id)
    where q.id = u.id and q.worker_id = $2::uuid
    returning q.job_id, q.step_name, q.worker_id, q.attempts, q.locked_at
  )
  insert into floor_history (job_id, step_name, worker_id, attempt, outcome, started_at, completed_at)
  select job_id, step_name, worker_id, attempts, 'completed', locked_at, now() from done
  returning job_id`;

const queue: Driver = {
  async claim(db, worker, limit) {
    const rows = await query<{ id: string; job_id: string; step_name: string; attempts: number }>(
      db,
      `floor_queue_claim_${limit}`,
      queueClaim(limit),
      [worker],
    );
    return rows.map((r) => ({ key: r.job_id, jobId: String(r.id), stepName: r.step_name, attempt: r.attempts }));
  },
  async report(db, worker, jobs) {
    const rows = await query(db, "floor_queue_report", QUEUE_REPORT, [jobs.map((j) => j.jobId), worker]);
    if (rows.length !== jobs.length) throw new Error(`queue report finished ${rows.length} of ${jobs.length} jobs`);
  },
};

/** The queue variant's check: every job in the history once, the queue empty. */
async function checkQueue(db: Database, jobs: number): Promise<string[]> {
  const res = await db.$client.query<{ queued: number; history: number; jobs: number }>(
    "select (select count(*)::int from floor_queue) as queued, count(*)::int as history, count(distinct job_id)::int as jobs from floor_history",
  );
  const r = res.rows[0] as { queued: number; history: number; jobs: number };
  const problems: string[] = [];
  if (r.queued > 0) problems.push(`${r.queued} jobs left in floor_queue`);
  if (r.history !== jobs || r.jobs !== jobs)
    problems.push(`${r.jobs}/${jobs} jobs in floor_history (${r.history} rows)`);
  return problems;
}

/** graphile-worker 0.18's getJobs query (src/sql/getJobs.ts), named-queue strategy 2, server time. */
const peerClaim = (limit: number) => `
  with ${limit > 1 ? "j_raw" : "j"} as (
    select jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.id
    from graphile_worker._private_jobs as jobs
    where jobs.is_available = true
    and run_at <= now()
    and task_id = any($2::int[])
    and (
      jobs.job_queue_id is null
      or jobs.job_queue_id in (
        select id from graphile_worker._private_job_queues as job_queues
        where job_queues.is_available = true
        for update skip locked
      )
    )
    order by priority asc, run_at asc
    limit ${limit}
    for update
    skip locked
  )${
    limit > 1
      ? `,
  j as (
    select distinct on (job_queue_id, case when job_queue_id is null then id end)
      job_queue_id, priority, run_at, id
    from j_raw
    order by job_queue_id, case when job_queue_id is null then id end, priority asc, run_at asc
  )`
      : ""
  },
  q as (
    update graphile_worker._private_job_queues as job_queues
    set locked_by = $1::text, locked_at = now()
    from j where job_queues.id = j.job_queue_id
  )
  update graphile_worker._private_jobs as jobs
  set attempts = jobs.attempts + 1, locked_by = $1::text, locked_at = now()
  from j where jobs.id = j.id
  returning *`;

function peer(taskId: number): Driver {
  return {
    async claim(db, worker, limit) {
      const rows = await query<{ id: string; attempts: number }>(db, `floor_peer_claim_${limit}`, peerClaim(limit), [
        worker,
        [taskId],
      ]);
      return rows.map((r) => ({ key: String(r.id), jobId: String(r.id), stepName: "", attempt: r.attempts }));
    },
    async report(db, _worker, jobs) {
      if (jobs.length === 1) {
        await query(
          db,
          "floor_peer_complete",
          "delete from graphile_worker._private_jobs as jobs where id = $1::bigint",
          [jobs[0]?.jobId],
        );
      } else {
        await query(
          db,
          "floor_peer_complete_many",
          "delete from graphile_worker._private_jobs as jobs using unnest($1::bigint[]) n(n) where id = n",
          [jobs.map((j) => j.jobId)],
        );
      }
    },
  };
}

/** A candidate model's claim and its one-statement complete (one job or a batch alike). */
function modelDriver(m: Model): Driver {
  return {
    async claim(db, worker, limit) {
      const rows = await query<{ job_id: string; step_name: string; attempt: number }>(
        db,
        `${m.name}_claim_${limit}`,
        m.claim(limit),
        [worker, "shell"],
      );
      return rows.map((r) => ({
        key: `${r.job_id}/${r.step_name}`,
        jobId: r.job_id,
        stepName: r.step_name,
        attempt: r.attempt,
      }));
    },
    async report(db, worker, jobs) {
      const rows = await query(db, `${m.name}_complete`, m.complete, [
        jobs.map((j) => j.jobId),
        jobs.map((j) => j.stepName),
        jobs.map((j) => j.attempt),
        worker,
      ]);
      if (rows.length !== jobs.length) throw new Error(`${m.name} complete took ${rows.length} of ${jobs.length}`);
    },
  };
}

/**
 * pg-boss 12's statements as its `fetch` and `complete` build them
 * (`plans.fetchNextJob` for a standard queue without metadata or tracing;
 * `plans.completeJobs`, fenced to the fetched attempt, no output), taken
 * from the installed package so they stay its own.
 */
function bossDriver(table: string): Driver {
  const fetchText = (limit: number) =>
    bossPlans.fetchNextJob({
      schema: BOSS_SCHEMA,
      table,
      name: BOSS_QUEUE,
      policy: bossPlans.QUEUE_POLICIES.standard,
      limit,
      includeMetadata: false,
      includeTraceContext: false,
    }).text;
  const completeText = bossPlans.completeJobs(BOSS_SCHEMA, table, false, true);
  return {
    async claim(db, _worker, limit) {
      const rows = await query<{ id: string; retryCount: number }>(
        db,
        `floor_boss_fetch_${limit}`,
        fetchText(limit),
        [],
      );
      return rows.map((r) => ({ key: r.id, jobId: r.id, stepName: "", attempt: r.retryCount }));
    },
    async report(db, _worker, jobs) {
      const ids = jobs.map((j) => j.jobId);
      const rows = await query<{ count: string }>(db, "floor_boss_complete", completeText, [
        BOSS_QUEUE,
        ids,
        null,
        bossPlans.attemptPairs(
          ids,
          jobs.map((j) => j.attempt),
        ),
      ]);
      const n = Number(rows[0]?.count ?? 0);
      if (n !== jobs.length) throw new Error(`pg-boss complete took ${n} of ${jobs.length}`);
    },
  };
}

/** Updates and HOT updates of `tables` in `schema`, once every other backend of the database has gone (a backend flushes its statistics when it exits). */
async function hotUpdates(db: Database, schema: string, tables: readonly string[]) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const res = await db.$client.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
    );
    if ((res.rows[0]?.n ?? 0) === 0 || Date.now() > deadline) break;
    await sleep(20);
  }
  const res = await db.$client.query<{ table: string; updates: string; hot: string }>(
    `select relname as table, n_tup_upd as updates, n_tup_hot_upd as hot from pg_stat_user_tables
     where schemaname = $1 and relname = any($2::text[]) order by relname`,
    [schema, tables],
  );
  return res.rows.map((r) => ({ table: r.table, updates: Number(r.updates), hot: Number(r.hot) }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Seeds `jobs` jobs of `shape` for `variant` (ours, model and row: the
 * bench's seeding; peer: `addJobs`; boss: `insert`; queue and the candidate
 * models: their own tables; not timed; shapes other than one step only for
 * ours and the candidate models) and drains them with `workers` loops
 * claiming `batch` at a time; checks every step ran exactly once.
 */
export async function floorDrain(
  url: string,
  variant: FloorVariant,
  jobs: number,
  workers: number,
  batch: number,
  shape: readonly StepShape[] = FLAT,
): Promise<FloorRun> {
  if (shape.length > 1 && !isModel(variant) && variant !== "ours")
    throw new Error(`SQL alone: ${variant} runs one-step jobs only`);
  const steps = jobs * shape.length;
  const pools: Database[] = Array.from({ length: workers }, () =>
    createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-floor" }),
  );
  const admin = createPool(url, { max: 1, statementTimeoutMs: 0, applicationName: "stroem-bench-floor-check" });
  const ids = pools.map(() => randomUUID());
  let ended = false;
  const endPools = async () => {
    if (ended) return;
    ended = true;
    await Promise.all(pools.map((p) => p.$client.end()));
  };
  try {
    let driver: Driver;
    let m: Model | undefined;
    if (variant === "peer") {
      await seedGraphile(url, jobs);
      driver = peer(await graphileTaskId(url));
    } else if (variant === "boss") {
      await seedBoss(url, jobs);
      driver = bossDriver(await bossTable(url));
    } else if (variant === "queue") {
      await admin.$client.query(QUEUE_TABLES);
      await admin.$client.query(
        "insert into floor_queue (job_id, step_name, action_type) select gen_random_uuid(), 'run', 'shell' from generate_series(1, $1::int)",
        [jobs],
      );
      await admin.$client.query("vacuum analyze floor_queue");
      driver = queue;
    } else if (isModel(variant)) {
      m = MODELS[variant](modelSchema(variant));
      await installModel(admin, m, jobs, shape);
      await admin.$client.query(`vacuum analyze ${m.schema}.live`);
      driver = modelDriver(m);
    } else {
      await seedJobs(pools[0] as Database, jobs, shape);
      await Promise.all(pools.map((db, i) => registerWorker(db, ids[i] as string, WORKER.capabilities)));
      driver = variant === "ours" ? ours : variant === "model" ? model : row;
    }
    const seen = new Set<string>();
    let duplicates = 0;
    let reported = 0;
    let stop = false;
    const loop = async (db: Database, worker: string) => {
      while (!stop && reported < steps) {
        const claimed = await driver.claim(db, worker, batch);
        if (claimed.length === 0) {
          await sleep(1);
          continue;
        }
        for (const c of claimed) {
          if (seen.has(c.key)) duplicates += 1;
          seen.add(c.key);
        }
        await driver.report(db, worker, claimed);
        reported += claimed.length;
      }
    };
    const probe = await startCost(url);
    const started = performance.now();
    const outcomes = await Promise.allSettled(
      pools.map((db, i) =>
        loop(db, ids[i] as string).catch((error) => {
          stop = true;
          throw error;
        }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const cost = await probe.stop();
    const failure = outcomes.find((o) => o.status === "rejected");
    if (failure) throw failure.reason;
    await endPools();
    let hot: FloorRun["hot"];
    let problems: string[];
    if (variant === "peer") {
      problems = await remainingJobs(url).then((n) =>
        n > 0 ? [`${n} jobs left in graphile_worker._private_jobs`] : [],
      );
    } else if (variant === "boss") {
      problems = await bossCheck(url, jobs);
    } else if (variant === "queue") {
      problems = await checkQueue(admin, jobs);
    } else if (m) {
      const res = await admin.$client.query<{ p: string }>(m.check, [jobs, shape.length]);
      problems = res.rows.map((r) => `${m.name}: ${r.p}`);
      hot = await hotUpdates(admin, m.schema, m.hotTables);
      for (const h of hot) {
        // HOT is what the model is built for. A page too full for the new
        // version loses it now and then (a batch claim updates whole pages at
        // once; old versions another transaction may still see cannot be
        // pruned; on a loaded machine, half of a quick run's 600 updates were
        // seen so): that is a figure, in the table. An indexed column written
        // by the hot path loses it always: that is a broken model.
        if (h.updates > 0 && h.hot < 0.1 * h.updates)
          problems.push(`${m.name}: only ${h.hot} of ${h.updates} updates of ${h.table} were HOT`);
      }
    } else {
      problems = await checkAllDone(url, jobs, steps, variant !== "row");
    }
    if (seen.size !== steps) problems.push(`${seen.size}/${steps} steps claimed`);
    if (duplicates > 0) problems.push(`${duplicates} steps claimed twice`);
    return { rate: reported / seconds, cost, problems, ...(hot ? { hot } : {}) };
  } finally {
    await endPools();
    await admin.$client.end();
  }
}
