import { type SQL, sql } from "drizzle-orm";
import { statement } from "../statement.js";

/**
 * The CTE `routes`: registers in `step_route` the routes of the tagged steps
 * among `steps` (a relation with `action_type`, `required_ability` and
 * `required_tags`), so tagged workers' claims find them. ON CONFLICT DO
 * NOTHING: a known route costs a probe of the primary key and writes
 * nothing; a new one inserted by a concurrent transaction is waited for, so
 * the route is committed no later than the steps that use it (a claim that
 * sees a step sees its route). In route order, so two statements that both
 * insert the same new routes wait for each other in one order, never in a
 * cycle. No row for untagged steps.
 */
export function stepRoutes(steps: SQL): SQL {
  return sql`routes as (
      insert into step_route (route, ability, tags)
      select distinct stroem_route(coalesce(x.required_ability, x.action_type), x.required_tags),
             coalesce(x.required_ability, x.action_type), stroem_tags(x.required_tags)
      from ${steps} where cardinality(x.required_tags) > 0
      order by 1
      on conflict (route) do nothing
    )`;
}

/**
 * Inserts jobs and their steps in one statement, whatever their number: each
 * list goes in as one JSON parameter (`jsonb_to_recordset`), so the statement
 * and its plan are the same for 1 or 10,000 jobs. The steps carry their graph
 * counts (`dependants`, `deps_unfinished`) and the jobs `steps_unfinished`,
 * computed by the caller from the validated flow. Each job is its definition
 * (`job`) and, unless it has exactly one step, its `job_live` row; each step
 * its definition (`job_step`) and its `step_live` row. Records one `job.created`
 * audit event per job (by `actorType` / `actorId`) in the same statement.
 * Notifies `stroem_ready_channel()` (the schema's channel) with the abilities of the steps created ready.
 */
function createJobsQuery(keyed: boolean) {
  const registerRoutes = stepRoutes(sql`new_steps x`);
  // Keyed: the idempotency keys are claimed first; only the jobs whose key
  // this statement inserted (or took over, expired) and the jobs without a
  // key are created, with their steps, events and wake-ups.
  const claimKeys = keyed
    ? sql`
    keys as (
      insert into job_idempotency_key (workspace, key, job_id, expires_at)
      select k.workspace, k.key, k.job_id, now() + make_interval(secs => k.ttl_secs)
      from jsonb_to_recordset(${sql.placeholder("keys")}::jsonb) as k(workspace text, key text, job_id uuid, ttl_secs integer)
      on conflict (workspace, key) do update
        set job_id = excluded.job_id, created_at = now(), expires_at = excluded.expires_at
        where job_idempotency_key.expires_at <= now()
      returning job_id
    ), `
    : sql``;
  const keep = keyed ? sql` where not x.keyed or x.job_id in (select job_id from keys)` : sql``;
  return sql`
    with ${claimKeys}new_jobs as (
      select x.* from jsonb_to_recordset(${sql.placeholder("jobs")}::jsonb) as x(
        job_id uuid, workspace text, task_name text, mode text, input jsonb, source_type text, source_id text,
        revision text, steps_unfinished integer, timeout_secs integer, keyed boolean, live boolean,
        parent_job_id uuid, parent_step_name text, depth integer)${keep}
    ), jobs as (
      insert into job (job_id, workspace, task_name, mode, input, source_type, source_id, revision, timeout_secs,
                       parent_job_id, parent_step_name)
      select x.job_id, x.workspace, x.task_name, x.mode, x.input, x.source_type, x.source_id, x.revision,
             x.timeout_secs, x.parent_job_id, x.parent_step_name
      from new_jobs x
      returning job_id
    ), live_jobs as (
      -- A job of one step has no job_live row (its step's live row is its
      -- state) unless the caller asks for one (\`live\`: a child job, a job
      -- with a task or loop step).
      insert into job_live (job_id, steps_unfinished, parent_job_id, parent_step_name, depth)
      select x.job_id, x.steps_unfinished, x.parent_job_id, x.parent_step_name, x.depth from new_jobs x where x.live
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text, 'job.created', 'job', j.job_id::text,
             jsonb_build_object('workspace', j.workspace, 'taskName', j.task_name, 'sourceType', j.source_type,
                                'steps', j.steps_unfinished)
      from new_jobs j
    ), new_steps as (
      select x.* from jsonb_to_recordset(${sql.placeholder("steps")}::jsonb) as x(
        job_id uuid, step_name text, action_name text, action_type text, required_ability text,
        required_tags text[], action_image text, action_spec jsonb, input jsonb, status text, depends_on text[], continue_on_failure boolean, dependants text[],
        deps_unfinished integer, max_retries integer, retry_backoff_secs integer, retry_strategy text,
        retry_jitter double precision, timeout_secs integer, when_condition text, for_each text)${keyed ? sql` where x.job_id in (select job_id from new_jobs)` : sql``}
    ), steps as (
      insert into job_step (job_id, step_name, action_name, action_type, required_ability, required_tags,
                            action_image, action_spec, input, depends_on, continue_on_failure, dependants,
                            max_retries, retry_backoff_secs, retry_strategy, retry_jitter, timeout_secs,
                            when_condition, for_each)
      select x.job_id, x.step_name, x.action_name, x.action_type, x.required_ability, stroem_tags(x.required_tags),
             x.action_image, x.action_spec, x.input,
             x.depends_on, x.continue_on_failure, x.dependants, x.max_retries, x.retry_backoff_secs,
             x.retry_strategy, x.retry_jitter, x.timeout_secs, x.when_condition, x.for_each
      from new_steps x
    ), live_steps as (
      insert into step_live (job_id, step_name, action_type, route, status, ready_at, max_retries, deps_total,
                             continue_on_failure, dependants, timeout_secs, deps_unfinished)
      select x.job_id, x.step_name, x.action_type,
             stroem_step_route(coalesce(x.required_ability, x.action_type), x.required_tags, x.when_condition, x.for_each),
             x.status, case when x.status = 'ready' then now() end,
             x.max_retries, cardinality(x.depends_on), x.continue_on_failure, x.dependants, x.timeout_secs,
             x.deps_unfinished
      from new_steps x
      returning route, status
    ), ${registerRoutes}
    -- array_agg over the notifications makes each one run (an unread CTE would be skipped).
    select (select array_agg(pg_notify(stroem_ready_channel(), r.ability)::text)
            from (select distinct stroem_route_ability(route) as ability from live_steps where status = 'ready') as r) as woken${
              keyed ? sql`, (select coalesce(array_agg(job_id), '{}') from new_jobs) as created` : sql``
            }`;
}

/** Values of `CREATE_JOBS`; `CREATE_JOBS_KEYED` also takes `keys` (`[{ workspace, key, job_id, ttl_secs }]`). */
export type CreateJobsValues = { jobs: string; steps: string; actorType: string; actorId: string | null };

export const CREATE_JOBS = statement<CreateJobsValues>("create_jobs", createJobsQuery(false));

/**
 * `CREATE_JOBS` for a call with idempotency keys: first claims each key in
 * `job_idempotency_key` (a live key held by another job is left alone; an
 * expired one is taken over), then creates only the jobs whose key it
 * claimed, and the keyless ones. Returns `created`, their ids. Two
 * concurrent calls with one key: the second's insert waits for the first's
 * commit, then finds the key live and creates nothing.
 */
export const CREATE_JOBS_KEYED = statement<CreateJobsValues & { keys: string }>(
  "create_jobs_keyed",
  createJobsQuery(true),
);

/** The jobs that hold these keys now (a second statement: it sees the commits the create waited for). */
export const JOBS_BY_KEYS = statement<{ keys: string }>(
  "jobs_by_keys",
  sql`select k.workspace, k.key, k.job_id from job_idempotency_key k
      join jsonb_to_recordset(${sql.placeholder("keys")}::jsonb) as x(workspace text, key text)
        on k.workspace = x.workspace and k.key = x.key`,
);
