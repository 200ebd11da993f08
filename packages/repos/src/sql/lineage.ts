import { sql } from "drizzle-orm";
import { statement } from "../statement.js";

/** Values of `COPY_JOB`. */
export type CopyJobValues = {
  /** The job copied. */
  sourceJobId: string;
  /** The new job's id (a v7 uuid). */
  jobId: string;
  kind: "rerun" | "restart" | "retry";
  /** A restart's step: the steps upstream of it are copied completed; null otherwise. */
  fromStep: string | null;
  /** A rerun's new input (JSON text), or null to keep the source's. */
  input: string | null;
  /** Whether `input` replaces the source's (a rerun may set it to JSON null). */
  replaceInput: boolean;
  actorType: string;
  actorId: string | null;
};

/** What `COPY_JOB` answers: one row, whatever happened. */
export type CopyJobRow = {
  /** The new job's id; null when nothing was created (then the columns below say why). */
  job_id: string | null;
  /** The source job's status; null when there is no such job. */
  source_status: string | null;
  /** A restart's step exists in the source job. */
  step_found: boolean;
  /** A restart's upstream steps that did not complete in the source job (then nothing is created). */
  not_completed: string[];
  /** The job that already retried the source (a retry is refused then). */
  retry_job_id: string | null;
  /** The new job's steps created ready. */
  ready: number;
};

/**
 * A new job made from another (`JobRepo.rerun`, `restart`, `retry`), in one
 * statement: the source job's definition (workspace, task, mode, input,
 * revision, timeout) and its steps' definitions (action, spec, input,
 * graph, retry policy, timeouts), as new: steps without unfinished
 * dependencies `ready`, the others `pending`, no attempts, no history.
 *
 * - `restart`: the steps upstream of `fromStep` (its dependencies, and
 *   theirs, transitively) are copied `completed` with their output and
 *   times, already applied to their dependants' counts; the rest run again.
 *   Refused (nothing written) when `fromStep` is not a step of the source or
 *   one of those upstream steps did not complete there.
 * - `retry`: only a `failed` source, retried at most once: the source row's
 *   `retry_job_id` is set first (`WHERE retry_job_id IS NULL`, so of two
 *   concurrent retries the second waits for the first's commit, then finds
 *   it set and creates nothing); the new job names the chain's first job
 *   (`retry_of_job_id`) and counts `retry_attempt` from it.
 *
 * Each new job has `source_type` = the kind, `source_id` = the source's id,
 * `source_job_id` = the source; one `job.created` audit event (details:
 * `sourceType`, `sourceJobId`, and `restartFromStep` or `retryOfJobId` /
 * `retryAttempt`); a wake-up for the action types of its ready steps. The
 * source job is read `FOR KEY SHARE` (it cannot be purged meanwhile) and,
 * but for `retry_job_id`, left unchanged.
 */
export const COPY_JOB = statement<CopyJobValues>(
  "copy_job",
  sql`
    with recursive locked as materialized (
      select j.job_id from job j where j.job_id = ${sql.placeholder("sourceJobId")}::uuid for key share
    ), src as materialized (
      select j.* from job_state j where j.job_id in (select job_id from locked)
    ), upstream(step_name) as (
      -- The restart step's dependencies, transitively (union: each once).
      select d.name from job_step s cross join unnest(s.depends_on) as d(name)
      where ${sql.placeholder("kind")}::text = 'restart' and s.job_id = ${sql.placeholder("sourceJobId")}::uuid
        and s.step_name = ${sql.placeholder("fromStep")}::text
      union
      select d.name from upstream u
      join job_step s on s.job_id = ${sql.placeholder("sourceJobId")}::uuid and s.step_name = u.step_name
      cross join unnest(s.depends_on) as d(name)
    ), steps as materialized (
      select s.*, s.step_name in (select step_name from upstream) as copied
      from job_step_state s where s.job_id = ${sql.placeholder("sourceJobId")}::uuid
        -- A loop's instances are not copied: its loop step expands again (or is copied completed).
        and s.loop_source is null
    ), checks as materialized (
      select
        (select status from src) as source_status,
        ${sql.placeholder("kind")}::text <> 'restart'
          or exists (select 1 from steps where step_name = ${sql.placeholder("fromStep")}::text) as step_found,
        coalesce((select array_agg(u.step_name order by u.step_name) from upstream u
                  where not exists (select 1 from steps s where s.step_name = u.step_name and s.status = 'completed')),
                 '{}') as not_completed
    ), retried as (
      -- A retry claims the source first: its row lock orders two concurrent retries.
      update job j set retry_job_id = ${sql.placeholder("jobId")}::uuid
      where ${sql.placeholder("kind")}::text = 'retry' and j.job_id = ${sql.placeholder("sourceJobId")}::uuid
        and (select status from src) = 'failed' and j.retry_job_id is null
      returning j.job_id
    ), go as materialized (
      select 1 from checks c
      where c.source_status is not null and c.step_found and cardinality(c.not_completed) = 0
        and (${sql.placeholder("kind")}::text <> 'retry' or exists (select 1 from retried))
    ), new_steps as materialized (
      select s.*,
        (select count(*)::int from unnest(s.depends_on) as d(name) where d.name in (select step_name from upstream)) as done
      from steps s where exists (select 1 from go)
    ), new_job as (
      insert into job (job_id, workspace, task_name, mode, input, source_type, source_id, revision, timeout_secs,
                       source_job_id, restart_from_step, retry_of_job_id, retry_attempt)
      select ${sql.placeholder("jobId")}::uuid, j.workspace, j.task_name, j.mode,
             case when ${sql.placeholder("replaceInput")}::boolean then ${sql.placeholder("input")}::jsonb else j.input end,
             ${sql.placeholder("kind")}::text, j.job_id::text, j.revision, j.timeout_secs, j.job_id,
             case when ${sql.placeholder("kind")}::text = 'restart' then ${sql.placeholder("fromStep")}::text end,
             case when ${sql.placeholder("kind")}::text = 'retry' then coalesce(j.retry_of_job_id, j.job_id) end,
             case when ${sql.placeholder("kind")}::text = 'retry' then j.retry_attempt + 1 else 0 end
      from src j where exists (select 1 from go)
      returning job_id, workspace, task_name, source_type, source_job_id, restart_from_step,
                retry_of_job_id, retry_attempt, (select count(*)::int from new_steps where not copied) as steps_unfinished
    ), new_job_live as (
      -- A job of one step has no job_live row (its step's live row is its state).
      insert into job_live (job_id, steps_unfinished)
      select n.job_id, n.steps_unfinished from new_job n
      where (select count(*) from new_steps) <> 1
        or exists (select 1 from new_steps s where s.action_type = 'task' or s.for_each is not null)
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text, 'job.created', 'job', n.job_id::text,
             jsonb_strip_nulls(jsonb_build_object('workspace', n.workspace, 'taskName', n.task_name,
               'sourceType', n.source_type, 'steps', n.steps_unfinished,
               'sourceJobId', n.source_job_id, 'restartFromStep', n.restart_from_step,
               'retryOfJobId', n.retry_of_job_id,
               'retryAttempt', case when n.retry_attempt > 0 then n.retry_attempt end))
      from new_job n
    ), new_defs as (
      insert into job_step (job_id, step_name, action_name, action_type, required_ability, required_tags,
                            action_image, action_spec, input, depends_on, continue_on_failure, dependants,
                            max_retries, retry_backoff_secs, retry_strategy, retry_jitter, timeout_secs,
                            when_condition, for_each)
      select n.job_id, s.step_name, s.action_name, s.action_type, s.required_ability, s.required_tags,
             s.action_image, s.action_spec, s.input,
             s.depends_on, s.continue_on_failure, s.dependants, s.max_retries - s.rescues, s.retry_backoff_secs,
             s.retry_strategy, s.retry_jitter, s.timeout_secs, s.when_condition, s.for_each
      from new_steps s cross join new_job n
    ), new_step_rows as (
      -- The source's routes are registered (its steps were created with them).
      insert into step_live (job_id, step_name, action_type, route, status, ready_at, max_retries, deps_total,
                             continue_on_failure, dependants, timeout_secs, deps_unfinished, deps_completed)
      select n.job_id, s.step_name, s.action_type,
             stroem_step_route(coalesce(s.required_ability, s.action_type), s.required_tags, s.when_condition, s.for_each),
             case when cardinality(s.depends_on) = s.done then 'ready' else 'pending' end,
             case when cardinality(s.depends_on) = s.done then now() end,
             s.max_retries - s.rescues, cardinality(s.depends_on), s.continue_on_failure, s.dependants, s.timeout_secs,
             cardinality(s.depends_on) - s.done, s.done
      from new_steps s cross join new_job n
      where not s.copied
      returning route, status
    ), copied_rows as (
      -- A restart's upstream steps: finished, applied (their dependants' counts above include them).
      insert into step_result (job_id, step_name, action_type, status, output, started_at, completed_at, max_retries,
                               deps_total, continue_on_failure, dependants, timeout_secs, deps_completed, propagated)
      select n.job_id, s.step_name, s.action_type, 'completed', s.output, s.started_at, s.completed_at,
             s.max_retries - s.rescues, cardinality(s.depends_on), s.continue_on_failure, s.dependants, s.timeout_secs,
             s.done, true
      from new_steps s cross join new_job n
      where s.copied
    )
    select (select job_id from new_job) as job_id, c.source_status, c.step_found, c.not_completed,
           (select retry_job_id from job where job_id = ${sql.placeholder("sourceJobId")}::uuid
             and ${sql.placeholder("kind")}::text = 'retry' and not exists (select 1 from retried)) as retry_job_id,
           (select count(*)::int from new_step_rows where status = 'ready') as ready,
           (select array_agg(pg_notify(stroem_ready_channel(), r.ability)::text)
              from (select distinct stroem_route_ability(route) as ability from new_step_rows where status = 'ready') as r) as woken
    from checks c`,
);
