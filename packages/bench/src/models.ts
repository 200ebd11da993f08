/**
 * Section 8's candidate data models for "Hot path v2" (issue 21): each a
 * set of tables in its own schema of the measurement's database, and the
 * statements a worker and the maintenance would send, with the real
 * semantics (not a floor):
 *
 * - claim: the ready index holds only claimable rows; `LIMIT n FOR UPDATE
 *   SKIP LOCKED` in a CTE; the job shows running from its first claim;
 * - complete (one or a batch, one statement): guarded by worker and attempt;
 *   the jobs locked first, by id; dependants' counters decremented and the
 *   ones reaching zero promoted in the same statement; the job settled;
 * - fail: back to ready with exponential backoff while attempts remain,
 *   else the step fails, the job fails and its unstarted steps are cancelled;
 * - cancel: the job cancelled, its unclaimed steps removed (SKIP LOCKED:
 *   a step being claimed at that moment runs and is recorded, not promoted);
 * - rescue: the leases of workers whose heartbeat is older than N seconds
 *   back to ready (the attempt stays, so the dead worker's report is refused);
 * - timeouts: leases past their deadline, each failed through `fail` (same
 *   guard, so a completion that wins the race stands).
 *
 * Lock order, everywhere: the job's row (by id) → the live row → the step
 * row. The claim is the exception that cannot deadlock: it holds only rows
 * it took with SKIP LOCKED plus its own step row, and waits for a job row
 * only while that job is pending, which nothing but a cancel locks (and a
 * cancel skips locked live rows).
 *
 * Models:
 * - live: the current tables kept (`job`, `job_step`, mutable, fillfactor
 *   70, no index on a column the hot path writes, so every update of them is
 *   HOT) plus a narrow `live` table of ready and leased steps, inserted at
 *   promotion and deleted at the terminal report;
 * - append: immutable definitions (`job`, `job_step`), a narrow `live` row
 *   per unfinished step (pending ones carry their dependency counter), a
 *   `job_run` row per unfinished job (HOT-updated, deleted at the end),
 *   append-only `attempt` rows (written at the claim, like Hatchet's
 *   runtime / awa's receipts) and `result` rows (at the report), and a
 *   `job_result` row per finished job (Hatchet v1 / Windmill's split);
 * - lean: append without what a one-step job does not need: no attempt row
 *   at the claim (the lease on the live row says who runs it since when), one
 *   append-only `result` row per finished attempt written once (it carries
 *   worker, attempt, start and end), no `job_run` row for one-step jobs, and
 *   the job's outcome on the result row that ended it (`job_done`).
 *
 * Every id that history is keyed by is time-ordered (uuid v7 jobs on
 * PostgreSQL 18, identity bigints), so history tables can later be range
 * partitioned by time without changing what callers pass.
 */
import type { Database } from "@stroem/repos";
import type { StepShape } from "./seed.js";

export type ModelName = "live" | "append" | "lean";

export interface Model {
  name: ModelName;
  schema: string;
  /** Tables and the id function, in the model's schema. */
  ddl: string;
  /** $1 shape (jsonb: name, deps, dependants), $2 jobs, $3 action type, $4 max attempts, $5 timeout s; returns job_id. */
  seed: string;
  /** $1 worker, $2 action type; returns job_id, step_name, attempt. */
  claim(limit: number): string;
  /** $1 job ids, $2 step names, $3 attempts, $4 worker; returns a row per accepted report. */
  complete: string;
  /** $1 job, $2 step, $3 attempt, $4 worker, $5 error; returns result: retry | failed | refused. */
  fail: string;
  /** $1 job; returns cancelled (0 or 1). */
  cancel: string;
  /** $1 seconds since a worker's last heartbeat; returns n (leases given back). */
  rescue: string;
  /** Leases past their deadline: job_id, step_name, attempt, worker_id (each then failed with `fail`). */
  timedOut: string;
  /** $1 job: step_name, status (pending | ready | running | completed | failed | cancelled), attempts. */
  steps: string;
  /** $1 job: status (pending | running | completed | failed | cancelled). */
  job: string;
  /** After a drain of $1 jobs of $2 steps each, all completed once: problems (text), empty when all is well. */
  check: string;
  /** Tables whose updates must all be HOT (pg_stat_user_tables.n_tup_hot_upd = n_tup_upd). */
  hotTables: string[];
}

const q = (schema: string, text: string) => text.replaceAll("@.", `${schema}.`);

/** uuid v7 where the server has it (PostgreSQL 18), else a random uuid. */
const newId = `
  do $$ begin
    if current_setting('server_version_num')::int >= 180000 then
      execute 'create function @.new_id() returns uuid language sql volatile as ''select uuidv7()''';
    else
      execute 'create function @.new_id() returns uuid language sql volatile as ''select gen_random_uuid()''';
    end if;
  end $$;
  create table @.worker (worker_id uuid primary key, last_seen timestamptz not null default now());`;

/** The shape of a seed: one row per step with its count of parents and the names of its dependants. */
export function shapeJson(shape: readonly StepShape[]): string {
  return JSON.stringify(
    shape.map((s) => ({
      name: s.name,
      deps: (s.dependsOn ?? []).length,
      dependants: shape.filter((o) => (o.dependsOn ?? []).includes(s.name)).map((o) => o.name),
    })),
  );
}

const SHAPE_CTE = `
  shape as (select * from jsonb_to_recordset($1::jsonb) as x(name text, deps int, dependants text[])),
  ids as materialized (select @.new_id() as job_id from generate_series(1, $2::int)),
  steps as (select count(*)::int as n from shape)`;

const INPUT_CTE = `
  input as (select * from unnest($1::uuid[], $2::text[], $3::int[]) as u(job_id, step_name, attempt))`;

const BACKOFF = "least(interval '1 second' * power(2, l.attempt - 1), interval '10 minutes')";

// ---------------------------------------------------------------- live

const live = (schema: string): Model => ({
  name: "live",
  schema,
  hotTables: ["job", "job_step"],
  ddl: q(
    schema,
    `create schema ${schema};${newId}
  -- The current model's two tables, indexed by their keys only: every
  -- update of the hot path is HOT (no indexed column changes), room for it
  -- kept by fillfactor 50 (a batch claim updates every row of the pages it
  -- took them from at once: at 70, a third of those updates were not HOT).
  -- History stays here, so it keeps the half-empty pages; time-ordered job ids.
  create table @.job (
    job_id uuid primary key,
    status text not null default 'pending',
    steps_unfinished integer not null,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    completed_at timestamptz
  ) with (fillfactor = 50);
  create table @.job_step (
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    status text not null,
    dependants text[] not null default '{}',
    deps_left integer not null default 0,
    attempts integer not null default 0,
    max_attempts integer not null default 3,
    timeout_s integer not null default 3600,
    worker_id uuid,
    started_at timestamptz,
    completed_at timestamptz,
    output jsonb,
    error text,
    primary key (job_id, step_name)
  ) with (fillfactor = 50);
  -- Ready and leased steps only: the size of the backlog.
  create table @.live (
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    ready_at timestamptz not null default now(),
    attempt integer not null default 0,
    max_attempts integer not null,
    timeout_s integer not null,
    worker_id uuid,
    deadline timestamptz,
    primary key (job_id, step_name)
  );
  create index live_ready on @.live (action_type, ready_at) where worker_id is null;
  create index live_lease on @.live (worker_id, deadline) where worker_id is not null;`,
  ),
  seed: q(
    schema,
    `with ${SHAPE_CTE},
  j as (insert into @.job (job_id, steps_unfinished) select job_id, (select n from steps) from ids),
  s as (
    insert into @.job_step (job_id, step_name, action_type, status, dependants, deps_left, max_attempts, timeout_s)
    select ids.job_id, shape.name, $3::text, case when shape.deps = 0 then 'ready' else 'pending' end,
      shape.dependants, shape.deps, $4::int, $5::int
    from ids cross join shape
  ),
  l as (
    insert into @.live (job_id, step_name, action_type, max_attempts, timeout_s)
    select ids.job_id, shape.name, $3::text, $4::int, $5::int from ids cross join shape where shape.deps = 0
  )
  select job_id from ids`,
  ),
  claim: (limit) =>
    q(
      schema,
      `with next as (
    select l.job_id, l.step_name from @.live l
    where l.worker_id is null and l.action_type = $2::text and l.ready_at <= now()
    order by l.ready_at
    limit ${limit}
    for update skip locked
  ),
  c as (
    update @.live l set worker_id = $1::uuid, attempt = l.attempt + 1, deadline = now() + make_interval(secs => l.timeout_s)
    from next
    where l.job_id = any(array(select job_id from next)) and l.job_id = next.job_id and l.step_name = next.step_name
    returning l.job_id, l.step_name, l.attempt
  ),
  s as (
    update @.job_step t set status = 'running', worker_id = $1::uuid, attempts = c.attempt, started_at = now(), error = null
    from c where t.job_id = any(array(select job_id from c)) and t.job_id = c.job_id and t.step_name = c.step_name
  ),
  j as (
    update @.job j set status = 'running', started_at = now()
    where j.job_id = any(array(select job_id from c)) and j.status = 'pending'
  )
  select job_id, step_name, attempt from c`,
    ),
  complete: q(
    schema,
    `with ${INPUT_CTE},
  jl as materialized (
    select j.job_id, j.status from @.job j
    where j.job_id = any($1::uuid[]) order by j.job_id for no key update
  ),
  done as (
    delete from @.live l using input i
    where l.job_id = any($1::uuid[]) and l.job_id = i.job_id and l.step_name = i.step_name
      and l.worker_id = $4::uuid and l.attempt = i.attempt and (select count(*) from jl) >= 0
    returning l.job_id, l.step_name
  ),
  s as (
    update @.job_step t set status = 'completed', completed_at = now()
    from done where t.job_id = done.job_id and t.step_name = done.step_name
    returning t.job_id, t.step_name, t.dependants
  ),
  dep as (
    select s.job_id, d.name as step_name, count(*)::int as n
    from s cross join unnest(s.dependants) as d(name)
    where s.job_id in (select job_id from jl where status = 'running')
    group by 1, 2
  ),
  promoted as (
    update @.job_step t set deps_left = t.deps_left - dep.n,
      status = case when t.deps_left = dep.n then 'ready' else t.status end
    from dep where t.job_id = dep.job_id and t.step_name = dep.step_name and t.status = 'pending'
    returning t.job_id, t.step_name, t.action_type, t.deps_left, t.max_attempts, t.timeout_s
  ),
  queued as (
    insert into @.live (job_id, step_name, action_type, max_attempts, timeout_s)
    select job_id, step_name, action_type, max_attempts, timeout_s from promoted where deps_left = 0
  ),
  settled as (
    update @.job j set steps_unfinished = j.steps_unfinished - f.n,
      status = case when j.steps_unfinished = f.n then 'completed' else j.status end,
      completed_at = case when j.steps_unfinished = f.n then now() end
    from (select job_id, count(*)::int as n from s group by job_id) f
    where j.job_id = f.job_id and j.status = 'running'
  )
  select job_id, step_name from s`,
  ),
  fail: q(
    schema,
    `with jl as materialized (select job_id from @.job where job_id = $1::uuid for no key update),
  l as materialized (
    select l.job_id, l.step_name, l.attempt, l.max_attempts from @.live l
    where l.job_id = $1::uuid and l.step_name = $2::text and l.worker_id = $4::uuid and l.attempt = $3::int
      and (select count(*) from jl) >= 0
    for update
  ),
  retry as (
    update @.live t set worker_id = null, deadline = null, ready_at = now() + ${BACKOFF}
    from l where t.job_id = l.job_id and t.step_name = l.step_name and l.attempt < l.max_attempts
    returning t.job_id, t.step_name
  ),
  gone as (
    delete from @.live t using l
    where t.job_id = l.job_id and t.step_name = l.step_name and l.attempt >= l.max_attempts
    returning t.job_id, t.step_name
  ),
  s as (
    update @.job_step t set
      status = case when l.attempt < l.max_attempts then 'ready' else 'failed' end,
      worker_id = case when l.attempt < l.max_attempts then null else t.worker_id end,
      completed_at = case when l.attempt < l.max_attempts then null else now() end,
      error = $5::text
    from l where t.job_id = l.job_id and t.step_name = l.step_name
  ),
  jf as (
    update @.job j set status = 'failed', completed_at = now()
    from gone where j.job_id = gone.job_id and j.status = 'running'
    returning j.job_id
  ),
  dropped as (
    delete from @.live t using jf where t.job_id = jf.job_id and t.worker_id is null
    returning t.step_name
  ),
  cancelled as (
    update @.job_step t set status = 'cancelled', completed_at = now()
    from jf where t.job_id = jf.job_id and (t.status = 'pending' or t.step_name in (select step_name from dropped))
  )
  select case when exists (select from retry) then 'retry' when exists (select from gone) then 'failed' else 'refused' end as result`,
  ),
  cancel: q(
    schema,
    `with j as (
    update @.job set status = 'cancelled', completed_at = now()
    where job_id = $1::uuid and status in ('pending', 'running') returning job_id
  ),
  gone as (
    delete from @.live t
    where (t.job_id, t.step_name) in (
      select l.job_id, l.step_name from @.live l join j on l.job_id = j.job_id where l.worker_id is null
      for update of l skip locked
    )
    returning t.step_name
  ),
  s as (
    update @.job_step t set status = 'cancelled', completed_at = now()
    from j where t.job_id = j.job_id and (t.status = 'pending' or t.step_name in (select step_name from gone))
  )
  select count(*)::int as cancelled from j`,
  ),
  rescue: q(
    schema,
    `with dead as (select worker_id from @.worker where last_seen < now() - make_interval(secs => $1::int)),
  jl as materialized (
    select j.job_id from @.job j
    where j.job_id in (select l.job_id from @.live l where l.worker_id in (select worker_id from dead))
    order by j.job_id for no key update
  ),
  back as (
    update @.live t set worker_id = null, deadline = null, ready_at = now()
    where t.worker_id in (select worker_id from dead) and (select count(*) from jl) >= 0
    returning t.job_id, t.step_name
  ),
  s as (
    update @.job_step t set status = 'ready', worker_id = null
    from back where t.job_id = back.job_id and t.step_name = back.step_name
  )
  select count(*)::int as n from back`,
  ),
  timedOut: q(
    schema,
    "select job_id, step_name, attempt, worker_id from @.live where worker_id is not null and deadline < now()",
  ),
  steps: q(schema, "select step_name, status, attempts from @.job_step where job_id = $1::uuid order by step_name"),
  job: q(schema, "select status from @.job where job_id = $1::uuid"),
  check: q(
    schema,
    `select p from (
    select format('%s rows left in live', count(*)) as p from @.live having count(*) > 0
    union all
    select format('%s/%s steps completed', count(*) filter (where status = 'completed'), $1::int * $2::int)
      from @.job_step having count(*) filter (where status = 'completed') <> $1::int * $2::int
    union all
    select format('%s steps with attempts <> 1', count(*)) from @.job_step where attempts <> 1 having count(*) > 0
    union all
    select format('%s/%s jobs completed', count(*) filter (where status = 'completed' and steps_unfinished = 0), $1::int)
      from @.job having count(*) filter (where status = 'completed' and steps_unfinished = 0) <> $1::int
    union all
    select format('%s steps started before a parent completed', count(*))
      from @.job_step c join @.job_step p on p.job_id = c.job_id and c.step_name = any(p.dependants)
      where c.started_at < p.completed_at having count(*) > 0
  ) x`,
  ),
});

// ---------------------------------------------------------------- append

const append = (schema: string): Model => ({
  name: "append",
  schema,
  hotTables: ["job_run"],
  ddl: q(
    schema,
    `create schema ${schema};${newId}
  -- Immutable definitions (history; partitionable by job_id's time).
  create table @.job (
    job_id uuid primary key,
    steps_total integer not null,
    created_at timestamptz not null default now()
  );
  create table @.job_step (
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    depends_on integer not null,
    dependants text[] not null default '{}',
    max_attempts integer not null,
    timeout_s integer not null,
    primary key (job_id, step_name)
  );
  -- Live: one row per unfinished job and per unfinished step.
  create table @.job_run (
    job_id uuid primary key,
    status text not null default 'pending',
    steps_unfinished integer not null,
    started_at timestamptz
  ) with (fillfactor = 50);
  create table @.live (
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    deps_left integer not null,
    dependants text[] not null,
    ready_at timestamptz not null default now(),
    attempt integer not null default 0,
    max_attempts integer not null,
    timeout_s integer not null,
    worker_id uuid,
    deadline timestamptz,
    primary key (job_id, step_name)
  );
  create index live_ready on @.live (action_type, ready_at) where worker_id is null and deps_left = 0;
  create index live_lease on @.live (worker_id, deadline) where worker_id is not null;
  -- Append-only history.
  create table @.attempt (
    id bigint generated always as identity primary key,
    job_id uuid not null,
    step_name text not null,
    attempt integer not null,
    worker_id uuid,
    started_at timestamptz not null default now()
  );
  create table @.result (
    id bigint generated always as identity primary key,
    job_id uuid not null,
    step_name text not null,
    attempt integer not null,
    outcome text not null,
    finished_at timestamptz not null default now(),
    output jsonb,
    error text
  );
  create index result_step on @.result (job_id, step_name);
  create table @.job_result (
    job_id uuid primary key,
    status text not null,
    started_at timestamptz,
    completed_at timestamptz not null default now()
  );`,
  ),
  seed: q(
    schema,
    `with ${SHAPE_CTE},
  j as (insert into @.job (job_id, steps_total) select job_id, (select n from steps) from ids),
  s as (
    insert into @.job_step (job_id, step_name, action_type, depends_on, dependants, max_attempts, timeout_s)
    select ids.job_id, shape.name, $3::text, shape.deps, shape.dependants, $4::int, $5::int from ids cross join shape
  ),
  r as (insert into @.job_run (job_id, steps_unfinished) select job_id, (select n from steps) from ids),
  l as (
    insert into @.live (job_id, step_name, action_type, deps_left, dependants, max_attempts, timeout_s)
    select ids.job_id, shape.name, $3::text, shape.deps, shape.dependants, $4::int, $5::int from ids cross join shape
  )
  select job_id from ids`,
  ),
  claim: (limit) =>
    q(
      schema,
      `with next as (
    select l.job_id, l.step_name from @.live l
    where l.worker_id is null and l.deps_left = 0 and l.action_type = $2::text and l.ready_at <= now()
    order by l.ready_at
    limit ${limit}
    for update skip locked
  ),
  c as (
    update @.live l set worker_id = $1::uuid, attempt = l.attempt + 1, deadline = now() + make_interval(secs => l.timeout_s)
    from next
    where l.job_id = any(array(select job_id from next)) and l.job_id = next.job_id and l.step_name = next.step_name
    returning l.job_id, l.step_name, l.attempt
  ),
  a as (insert into @.attempt (job_id, step_name, attempt, worker_id) select job_id, step_name, attempt, $1::uuid from c),
  j as (
    update @.job_run r set status = 'running', started_at = now()
    where r.job_id = any(array(select job_id from c)) and r.status = 'pending'
  )
  select job_id, step_name, attempt from c`,
    ),
  complete: q(
    schema,
    `with ${INPUT_CTE},
  jl as materialized (
    select r.job_id, r.status, r.steps_unfinished, r.started_at from @.job_run r
    where r.job_id = any($1::uuid[]) order by r.job_id for no key update
  ),
  done as (
    delete from @.live l using input i
    where l.job_id = any($1::uuid[]) and l.job_id = i.job_id and l.step_name = i.step_name
      and l.worker_id = $4::uuid and l.attempt = i.attempt and (select count(*) from jl) >= 0
    returning l.job_id, l.step_name, l.attempt, l.dependants
  ),
  res as (
    insert into @.result (job_id, step_name, attempt, outcome)
    select job_id, step_name, attempt, 'completed' from done
    returning job_id, step_name
  ),
  f as (
    select d.job_id, count(*)::int as n from done d
    where d.job_id in (select job_id from jl where status = 'running') group by d.job_id
  ),
  fin as (
    delete from @.job_run r using f where r.job_id = f.job_id and r.steps_unfinished = f.n
    returning r.job_id, r.started_at
  ),
  ended as (insert into @.job_result (job_id, status, started_at) select job_id, 'completed', started_at from fin),
  dec as (
    update @.job_run r set steps_unfinished = r.steps_unfinished - f.n
    from f where r.job_id = f.job_id and r.steps_unfinished > f.n
  ),
  dep as (
    select d.job_id, x.name as step_name, count(*)::int as n
    from done d cross join unnest(d.dependants) as x(name)
    where d.job_id in (select job_id from f) group by 1, 2
  ),
  promoted as (
    update @.live l set deps_left = l.deps_left - dep.n, ready_at = now()
    from dep where l.job_id = dep.job_id and l.step_name = dep.step_name
  )
  select job_id, step_name from res`,
  ),
  fail: q(
    schema,
    `with jl as materialized (select job_id from @.job_run where job_id = $1::uuid for no key update),
  l as materialized (
    select l.job_id, l.step_name, l.attempt, l.max_attempts from @.live l
    where l.job_id = $1::uuid and l.step_name = $2::text and l.worker_id = $4::uuid and l.attempt = $3::int
      and (select count(*) from jl) >= 0
    for update
  ),
  res as (
    insert into @.result (job_id, step_name, attempt, outcome, error)
    select job_id, step_name, attempt, case when attempt < max_attempts then 'retried' else 'failed' end, $5::text from l
  ),
  retry as (
    update @.live t set worker_id = null, deadline = null, ready_at = now() + ${BACKOFF}
    from l where t.job_id = l.job_id and t.step_name = l.step_name and l.attempt < l.max_attempts
    returning t.job_id
  ),
  gone as (
    delete from @.live t using l
    where t.job_id = l.job_id and t.step_name = l.step_name and l.attempt >= l.max_attempts
    returning t.job_id
  ),
  jf as (
    delete from @.job_run r using gone where r.job_id = gone.job_id and r.status = 'running'
    returning r.job_id, r.started_at
  ),
  ended as (insert into @.job_result (job_id, status, started_at) select job_id, 'failed', started_at from jf),
  dropped as (
    delete from @.live t using jf where t.job_id = jf.job_id and t.worker_id is null
    returning t.job_id, t.step_name, t.attempt
  ),
  cancelled as (
    insert into @.result (job_id, step_name, attempt, outcome) select job_id, step_name, attempt, 'cancelled' from dropped
  )
  select case when exists (select from retry) then 'retry' when exists (select from gone) then 'failed' else 'refused' end as result`,
  ),
  cancel: q(
    schema,
    `with j as (
    delete from @.job_run where job_id = $1::uuid returning job_id, started_at
  ),
  ended as (insert into @.job_result (job_id, status, started_at) select job_id, 'cancelled', started_at from j),
  gone as (
    delete from @.live t
    where (t.job_id, t.step_name) in (
      select l.job_id, l.step_name from @.live l join j on l.job_id = j.job_id where l.worker_id is null
      for update of l skip locked
    )
    returning t.job_id, t.step_name, t.attempt
  ),
  res as (insert into @.result (job_id, step_name, attempt, outcome) select job_id, step_name, attempt, 'cancelled' from gone)
  select count(*)::int as cancelled from j`,
  ),
  rescue: q(
    schema,
    `with dead as (select worker_id from @.worker where last_seen < now() - make_interval(secs => $1::int)),
  jl as materialized (
    select r.job_id from @.job_run r
    where r.job_id in (select l.job_id from @.live l where l.worker_id in (select worker_id from dead))
    order by r.job_id for no key update
  ),
  back as (
    update @.live t set worker_id = null, deadline = null, ready_at = now()
    where t.worker_id in (select worker_id from dead) and (select count(*) from jl) >= 0
    returning t.job_id, t.step_name, t.attempt
  ),
  res as (insert into @.result (job_id, step_name, attempt, outcome) select job_id, step_name, attempt, 'rescued' from back)
  select count(*)::int as n from back`,
  ),
  timedOut: q(
    schema,
    "select job_id, step_name, attempt, worker_id from @.live where worker_id is not null and deadline < now()",
  ),
  // What a view over the model would show.
  steps: q(
    schema,
    `select s.step_name,
    coalesce(
      case when l.job_id is not null then
        case when l.worker_id is not null then 'running' when l.deps_left = 0 then 'ready' else 'pending' end
      end,
      (select r.outcome from @.result r where r.job_id = s.job_id and r.step_name = s.step_name order by r.id desc limit 1),
      'pending'
    ) as status,
    coalesce(l.attempt, (select max(a.attempt) from @.attempt a where a.job_id = s.job_id and a.step_name = s.step_name), 0) as attempts
  from @.job_step s left join @.live l on l.job_id = s.job_id and l.step_name = s.step_name
  where s.job_id = $1::uuid order by s.step_name`,
  ),
  job: q(
    schema,
    `select coalesce(
      (select status from @.job_result where job_id = $1::uuid),
      (select status from @.job_run where job_id = $1::uuid)
    ) as status`,
  ),
  check: q(
    schema,
    `select p from (
    select format('%s rows left in live', count(*)) as p from @.live having count(*) > 0
    union all
    select format('%s rows left in job_run', count(*)) from @.job_run having count(*) > 0
    union all
    select format('%s/%s steps with one completed result', count(distinct (job_id, step_name)), $1::int * $2::int)
      from @.result where outcome = 'completed' having count(*) <> $1::int * $2::int or count(distinct (job_id, step_name)) <> $1::int * $2::int
    union all
    select format('%s claims other than a first attempt', count(*)) from @.attempt where attempt <> 1 having count(*) > 0
    union all
    select format('%s/%s attempts recorded', count(*), $1::int * $2::int) from @.attempt having count(*) <> $1::int * $2::int
    union all
    select format('%s/%s jobs completed', count(*), $1::int) from @.job_result where status = 'completed' having count(*) <> $1::int
    union all
    select format('%s steps claimed before a parent completed', count(*))
      from @.job_step c join @.job_step p on p.job_id = c.job_id and c.step_name = any(p.dependants)
      join @.attempt a on a.job_id = c.job_id and a.step_name = c.step_name
      join @.result r on r.job_id = p.job_id and r.step_name = p.step_name and r.outcome = 'completed'
      where a.started_at < r.finished_at having count(*) > 0
  ) x`,
  ),
});

// ---------------------------------------------------------------- lean

const lean = (schema: string): Model => ({
  name: "lean",
  schema,
  hotTables: ["job_run"],
  ddl: q(
    schema,
    `create schema ${schema};${newId}
  -- Immutable definitions (history; partitionable by job_id's time).
  create table @.job (
    job_id uuid primary key,
    steps_total integer not null,
    created_at timestamptz not null default now()
  );
  create table @.job_step (
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    depends_on integer not null,
    dependants text[] not null default '{}',
    max_attempts integer not null,
    timeout_s integer not null,
    primary key (job_id, step_name)
  );
  -- Live: a job_run row only for jobs of more than one step; a row per unfinished step.
  create table @.job_run (
    job_id uuid primary key,
    status text not null default 'pending',
    steps_unfinished integer not null,
    started_at timestamptz
  ) with (fillfactor = 50);
  create table @.live (
    job_id uuid not null,
    step_name text not null,
    action_type text not null,
    single boolean not null,
    deps_left integer not null,
    dependants text[] not null,
    ready_at timestamptz not null default now(),
    attempt integer not null default 0,
    max_attempts integer not null,
    timeout_s integer not null,
    worker_id uuid,
    claimed_at timestamptz,
    deadline timestamptz,
    primary key (job_id, step_name)
  );
  create index live_ready on @.live (action_type, ready_at) where worker_id is null and deps_left = 0;
  create index live_lease on @.live (worker_id, deadline) where worker_id is not null;
  -- Append-only history: one row per finished attempt, written once; the
  -- row that ended its job says so (job_done) and carries the job's outcome.
  create table @.result (
    id bigint generated always as identity primary key,
    job_id uuid not null,
    step_name text not null,
    attempt integer not null,
    worker_id uuid,
    started_at timestamptz,
    finished_at timestamptz not null default now(),
    outcome text not null,
    job_done boolean not null default false,
    output jsonb,
    error text
  );
  create index result_step on @.result (job_id, step_name);`,
  ),
  seed: q(
    schema,
    `with ${SHAPE_CTE},
  j as (insert into @.job (job_id, steps_total) select job_id, (select n from steps) from ids),
  s as (
    insert into @.job_step (job_id, step_name, action_type, depends_on, dependants, max_attempts, timeout_s)
    select ids.job_id, shape.name, $3::text, shape.deps, shape.dependants, $4::int, $5::int from ids cross join shape
  ),
  r as (
    insert into @.job_run (job_id, steps_unfinished)
    select job_id, (select n from steps) from ids where (select n from steps) > 1
  ),
  l as (
    insert into @.live (job_id, step_name, action_type, single, deps_left, dependants, max_attempts, timeout_s)
    select ids.job_id, shape.name, $3::text, (select n from steps) = 1, shape.deps, shape.dependants, $4::int, $5::int
    from ids cross join shape
  )
  select job_id from ids`,
  ),
  claim: (limit) =>
    q(
      schema,
      `with next as (
    select l.job_id, l.step_name from @.live l
    where l.worker_id is null and l.deps_left = 0 and l.action_type = $2::text and l.ready_at <= now()
    order by l.ready_at
    limit ${limit}
    for update skip locked
  ),
  c as (
    update @.live l set worker_id = $1::uuid, attempt = l.attempt + 1, claimed_at = now(),
      deadline = now() + make_interval(secs => l.timeout_s)
    from next
    where l.job_id = any(array(select job_id from next)) and l.job_id = next.job_id and l.step_name = next.step_name
    returning l.job_id, l.step_name, l.attempt, l.single
  ),
  j as (
    update @.job_run r set status = 'running', started_at = now()
    where r.job_id = any(array(select job_id from c where not single)) and r.status = 'pending'
  )
  select job_id, step_name, attempt from c`,
    ),
  complete: q(
    schema,
    `with ${INPUT_CTE},
  jl as materialized (
    select r.job_id, r.status, r.steps_unfinished from @.job_run r
    where r.job_id = any($1::uuid[]) order by r.job_id for no key update
  ),
  done as (
    delete from @.live l using input i
    where l.job_id = any($1::uuid[]) and l.job_id = i.job_id and l.step_name = i.step_name
      and l.worker_id = $4::uuid and l.attempt = i.attempt and (select count(*) from jl) >= 0
    returning l.job_id, l.step_name, l.attempt, l.single, l.dependants, l.claimed_at
  ),
  f as (
    select d.job_id, count(*)::int as n from done d
    where not d.single and d.job_id in (select job_id from jl where status = 'running') group by d.job_id
  ),
  fin as (
    delete from @.job_run r using f where r.job_id = f.job_id and r.steps_unfinished = f.n returning r.job_id
  ),
  dec as (
    update @.job_run r set steps_unfinished = r.steps_unfinished - f.n
    from f where r.job_id = f.job_id and r.steps_unfinished > f.n
  ),
  dep as (
    select d.job_id, x.name as step_name, count(*)::int as n
    from done d cross join unnest(d.dependants) as x(name)
    where d.job_id in (select job_id from f) group by 1, 2
  ),
  promoted as (
    update @.live l set deps_left = l.deps_left - dep.n, ready_at = now()
    from dep where l.job_id = dep.job_id and l.step_name = dep.step_name
  ),
  res as (
    insert into @.result (job_id, step_name, attempt, worker_id, started_at, outcome, job_done)
    select d.job_id, d.step_name, d.attempt, $4::uuid, d.claimed_at, 'completed',
      d.single or d.job_id in (select job_id from fin)
    from done d
    returning job_id, step_name
  )
  select job_id, step_name from res`,
  ),
  fail: q(
    schema,
    `with jl as materialized (select job_id, status from @.job_run where job_id = $1::uuid for no key update),
  l as materialized (
    select l.job_id, l.step_name, l.attempt, l.max_attempts, l.single, l.claimed_at from @.live l
    where l.job_id = $1::uuid and l.step_name = $2::text and l.worker_id = $4::uuid and l.attempt = $3::int
      and (select count(*) from jl) >= 0
    for update
  ),
  retry as (
    update @.live t set worker_id = null, claimed_at = null, deadline = null, ready_at = now() + ${BACKOFF}
    from l where t.job_id = l.job_id and t.step_name = l.step_name and l.attempt < l.max_attempts
    returning t.job_id
  ),
  gone as (
    delete from @.live t using l
    where t.job_id = l.job_id and t.step_name = l.step_name and l.attempt >= l.max_attempts
    returning t.job_id
  ),
  jf as (
    delete from @.job_run r using gone where r.job_id = gone.job_id and r.status = 'running' returning r.job_id
  ),
  dropped as (
    delete from @.live t using jf where t.job_id = jf.job_id and t.worker_id is null
    returning t.job_id, t.step_name, t.attempt
  ),
  res as (
    insert into @.result (job_id, step_name, attempt, worker_id, started_at, outcome, job_done, error)
    select job_id, step_name, attempt, $4::uuid, claimed_at,
      case when attempt < max_attempts then 'retried' else 'failed' end,
      attempt >= max_attempts and (single or exists (select from jl where status = 'running')), $5::text
    from l
    union all
    select job_id, step_name, attempt, null, null, 'cancelled', false, null from dropped
  )
  select case when exists (select from retry) then 'retry' when exists (select from gone) then 'failed' else 'refused' end as result`,
  ),
  cancel: q(
    schema,
    `with j as (
    delete from @.job_run where job_id = $1::uuid returning job_id
  ),
  one as (
    select l.job_id, l.step_name, l.attempt from @.live l
    where l.job_id = $1::uuid and l.single and l.worker_id is null
    for update skip locked
  ),
  gone as (
    delete from @.live t
    where (t.job_id, t.step_name) in (
      select l.job_id, l.step_name from @.live l join j on l.job_id = j.job_id where l.worker_id is null
      for update of l skip locked
    ) or (t.job_id, t.step_name) in (select job_id, step_name from one)
    returning t.job_id, t.step_name, t.attempt
  ),
  res as (
    insert into @.result (job_id, step_name, attempt, outcome, job_done)
    select job_id, step_name, attempt, 'cancelled', row_number() over () = 1 from gone
    union all
    select job_id, '', 0, 'cancelled', true from j where not exists (select from gone)
  )
  select ((select count(*) from j) + (select count(*) from one))::int as cancelled`,
  ),
  rescue: q(
    schema,
    `with dead as (select worker_id from @.worker where last_seen < now() - make_interval(secs => $1::int)),
  jl as materialized (
    select r.job_id from @.job_run r
    where r.job_id in (select l.job_id from @.live l where l.worker_id in (select worker_id from dead))
    order by r.job_id for no key update
  ),
  back as (
    update @.live t set worker_id = null, claimed_at = null, deadline = null, ready_at = now()
    where t.worker_id in (select worker_id from dead) and (select count(*) from jl) >= 0
    returning t.job_id
  )
  select count(*)::int as n from back`,
  ),
  timedOut: q(
    schema,
    "select job_id, step_name, attempt, worker_id from @.live where worker_id is not null and deadline < now()",
  ),
  steps: q(
    schema,
    `select s.step_name,
    coalesce(
      case when l.job_id is not null then
        case when l.worker_id is not null then 'running' when l.deps_left = 0 then 'ready' else 'pending' end
      end,
      (select r.outcome from @.result r where r.job_id = s.job_id and r.step_name = s.step_name order by r.id desc limit 1),
      (select 'cancelled' from @.result r where r.job_id = s.job_id and r.job_done and r.outcome in ('failed', 'cancelled') limit 1),
      'pending'
    ) as status,
    coalesce(l.attempt, (select max(r.attempt) from @.result r where r.job_id = s.job_id and r.step_name = s.step_name), 0) as attempts
  from @.job_step s left join @.live l on l.job_id = s.job_id and l.step_name = s.step_name
  where s.job_id = $1::uuid order by s.step_name`,
  ),
  job: q(
    schema,
    `select coalesce(
      (select outcome from @.result where job_id = $1::uuid and job_done limit 1),
      (select status from @.job_run where job_id = $1::uuid),
      (select 'running' from @.live where job_id = $1::uuid and worker_id is not null limit 1),
      'pending'
    ) as status`,
  ),
  check: q(
    schema,
    `select p from (
    select format('%s rows left in live', count(*)) as p from @.live having count(*) > 0
    union all
    select format('%s rows left in job_run', count(*)) from @.job_run having count(*) > 0
    union all
    select format('%s/%s steps with one completed result', count(distinct (job_id, step_name)), $1::int * $2::int)
      from @.result where outcome = 'completed' having count(*) <> $1::int * $2::int or count(distinct (job_id, step_name)) <> $1::int * $2::int
    union all
    select format('%s results of an attempt other than the first', count(*)) from @.result where attempt <> 1 having count(*) > 0
    union all
    select format('%s/%s jobs completed', count(*), $1::int) from @.result where job_done and outcome = 'completed' having count(*) <> $1::int
    union all
    select format('%s steps started before a parent completed', count(*))
      from @.job_step c join @.job_step p on p.job_id = c.job_id and c.step_name = any(p.dependants)
      join @.result rc on rc.job_id = c.job_id and rc.step_name = c.step_name
      join @.result rp on rp.job_id = p.job_id and rp.step_name = p.step_name and rp.outcome = 'completed'
      where rc.started_at < rp.finished_at having count(*) > 0
  ) x`,
  ),
});

export const MODELS: Record<ModelName, (schema: string) => Model> = { live, append, lean };

/** Creates the model's tables in `db` and seeds `jobs` jobs of `shape`; returns their ids. */
export async function installModel(
  db: Database,
  m: Model,
  jobs: number,
  shape: readonly StepShape[],
  opts: { actionType?: string; maxAttempts?: number; timeoutS?: number } = {},
): Promise<string[]> {
  await db.$client.query(m.ddl);
  return seedModel(db, m, jobs, shape, opts);
}

export async function seedModel(
  db: Database,
  m: Model,
  jobs: number,
  shape: readonly StepShape[],
  opts: { actionType?: string; maxAttempts?: number; timeoutS?: number } = {},
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < jobs; i += 10_000) {
    const res = await db.$client.query<{ job_id: string }>(m.seed, [
      shapeJson(shape),
      Math.min(10_000, jobs - i),
      opts.actionType ?? "shell",
      opts.maxAttempts ?? 3,
      opts.timeoutS ?? 3600,
    ]);
    ids.push(...res.rows.map((r) => r.job_id));
  }
  return ids;
}
