import { type SQL, sql } from "drizzle-orm";
import { statement } from "../statement.js";

/**
 * The CTE `child_audit`: one `job.cancelled` event (by the given actor) per
 * child job the function's answer `r` lists in `children` (details: the
 * reason the child was given, `parentJobId`), when `r.result` is `ok`.
 */
function childrenCancelled(actorType: SQL, actorId: SQL): SQL {
  return sql`child_audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${actorType}, ${actorId}, 'job.cancelled', 'job', c.job_id::text,
             jsonb_build_object('reason', l.cancel_reason, 'parentJobId', ${sql.placeholder("jobId")}::text)
      from r cross join unnest(r.children) as c(job_id) left join job_result l on l.job_id = c.job_id
      where r.result = 'ok'
    )`;
}

/** What `stroem_cancel_job` returns. */
export type CancelJobRow = {
  result: "ok" | "already" | "not_found" | "invalid_transition";
  cancelled: string[] | null;
  cancel_requested: string[] | null;
  job_status: string | null;
  children: string[] | null;
};

/**
 * Cancels a job: its unfinished children first, then the job row locked,
 * then its steps (see the function's comment); when it did cancel (`ok`),
 * records a `job.cancelled` audit event by `actorType` / `actorId` in the
 * same statement, and one per child it cancelled (details: the reason
 * given to the child, `parentJobId`).
 */
export const CANCEL_JOB = statement<{
  jobId: string;
  reason: string | null;
  actorType: string;
  actorId: string | null;
}>(
  "cancel_job",
  sql`
    with r as (
      select * from stroem_cancel_job(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("reason")}::text)
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text, 'job.cancelled', 'job',
             ${sql.placeholder("jobId")}::text,
             jsonb_build_object('reason', ${sql.placeholder("reason")}::text, 'cancelled', to_jsonb(r.cancelled),
                                'cancelRequested', to_jsonb(r.cancel_requested))
      from r where r.result = 'ok'
    ), ${childrenCancelled(sql`${sql.placeholder("actorType")}::text`, sql`${sql.placeholder("actorId")}::text`)}
    select * from r`,
);

/** What `stroem_finish_job` returns. */
export type FinishJobRow = {
  result: "ok" | "not_found" | "invalid_transition";
  cancelled: string[] | null;
  cancel_requested: string[] | null;
  job_status: string | null;
  children: string[] | null;
};

/**
 * Ends a job by hand (`completed` with its output, or `failed`): its
 * unfinished children cancelled first (a `job.cancelled` audit event each,
 * by the system), the job row locked, then its open steps closed as a
 * cancel closes them.
 */
export const FINISH_JOB = statement<{ jobId: string; status: "completed" | "failed"; output: string | null }>(
  "finish_job",
  sql`
    with r as (
      select * from stroem_finish_job(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("status")}::text,
        ${sql.placeholder("output")}::jsonb)
    ), ${childrenCancelled(sql`'system'`, sql`null::text`)}
    select * from r`,
);

/** What `stroem_cancel_step` returns. */
export type CancelStepRow = {
  result: "ok" | "repeated" | "not_found" | "invalid_transition" | "not_owner";
  step_status: string | null;
  step_worker_id: string | null;
  step_attempts: number | null;
  cancel_requested: boolean | null;
};

/** `running -> cancelled` of a step whose cancel was requested, guarded like a report. */
export const CANCEL_STEP = statement<{
  jobId: string;
  stepName: string;
  workerId: string | null;
  attempt: number | null;
}>(
  "cancel_step",
  sql`select * from stroem_cancel_step(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text,
    ${sql.placeholder("workerId")}::uuid, ${sql.placeholder("attempt")}::int)`,
);

/**
 * A heartbeat (`stroem_heartbeat`): `last_heartbeat = now()`, and the steps
 * the worker should stop: the running steps it holds whose cancel was
 * requested (served by `idx_step_live_running_worker`), and those of
 * `running` (what the worker says it runs, a JSON array of `{ job_id,
 * step_name, attempt }`) that it no longer holds in that attempt (timed out,
 * rescued, cancelled), with the reason from the retry history or the step's
 * error. With `release`, first gives back its orphaned claims (running, its
 * own, not listed, claimed before its previous heartbeat). No row: no such
 * worker; a row with a null `job_id`: nothing to stop.
 */
export const HEARTBEAT = statement<{ workerId: string; running: string; release: boolean; maxRescues: number }>(
  "heartbeat",
  sql`select * from stroem_heartbeat(${sql.placeholder("workerId")}::uuid, ${sql.placeholder("running")}::jsonb,
    ${sql.placeholder("release")}::boolean, ${sql.placeholder("maxRescues")}::int)`,
);
