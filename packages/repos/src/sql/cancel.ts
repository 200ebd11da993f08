import { sql } from "drizzle-orm";
import { statement } from "../statement.js";

/** What `stroem_cancel_job` returns (migration 0007). */
export type CancelJobRow = {
  result: "ok" | "already" | "not_found" | "invalid_transition";
  cancelled: string[] | null;
  cancel_requested: string[] | null;
  job_status: string | null;
};

/** Cancels a job: the job row locked first, then its steps (see the function's comment). */
export const CANCEL_JOB = statement<{ jobId: string; reason: string | null }>(
  "cancel_job",
  sql`select * from stroem_cancel_job(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("reason")}::text)`,
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
 * A heartbeat: `last_heartbeat = now()`, and the running steps the worker
 * holds whose cancel was requested (served by `idx_job_step_running_worker`).
 * No row: no such worker; one row with a null `job_id`: nothing to cancel.
 */
export const HEARTBEAT = statement<{ workerId: string }>(
  "heartbeat",
  sql`
    with w as (
      update worker set last_heartbeat = now() where worker_id = ${sql.placeholder("workerId")}::uuid
      returning worker_id
    )
    select s.job_id, s.step_name, s.attempts, s.cancel_requested_at, j.cancel_reason
    from w
    left join job_step s on s.worker_id = w.worker_id and s.status = 'running' and s.cancel_requested_at is not null
    left join job j on j.job_id = s.job_id
    order by s.job_id, s.step_name`,
);
