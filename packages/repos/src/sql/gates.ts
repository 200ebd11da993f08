import { sql } from "drizzle-orm";
import { statement } from "../statement.js";

/** What `stroem_suspend_step` answers. */
export type SuspendRow = {
  result: "ok" | "repeated" | "not_found" | "not_server" | "invalid_transition";
  step_status: string | null;
  job_status: string | null;
  action_type: string | null;
  suspended_at: string | Date | null;
};

/**
 * Suspends a ready gate (`stroem_suspend_step`, `packages/schema/sql/45_gates.sql`)
 * and, when it did (`ok`), records `step.suspended` under its job by the
 * actor, in the same statement.
 */
export type SuspendValues = {
  jobId: string;
  stepName: string;
  output: string | null;
  actorType: string;
  actorId: string | null;
};

export const SUSPEND_STEP = statement<SuspendValues>(
  "suspend_step",
  sql`
    with r as (
      select * from stroem_suspend_step(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text,
        ${sql.placeholder("output")}::jsonb)
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text, 'step.suspended', 'job',
             ${sql.placeholder("jobId")}::text, jsonb_build_object('stepName', ${sql.placeholder("stepName")}::text)
      from r where r.result = 'ok'
    )
    select * from r`,
);

/** What `stroem_decide_gate` answers. */
export type DecideRow = {
  result: "ok" | "not_found" | "invalid_transition" | "repeated" | "not_owner" | "not_gate";
  step_status: string | null;
  job_status: string | null;
  promoted: string[] | null;
  skipped: string[] | null;
  output: unknown;
  waited_ms: number | null;
};

/**
 * Approves or rejects a suspended gate (`stroem_decide_gate`) and, when it
 * did, records `step.approved` / `step.rejected` under its job by the
 * decider (details: the step, the reason of a rejection, how long it
 * waited), in the same statement.
 */
export type DecideValues = {
  jobId: string;
  stepName: string;
  approve: boolean;
  output: string;
  error: string | null;
  actorType: string;
  actorId: string | null;
};

export const DECIDE_GATE = statement<DecideValues>(
  "decide_gate",
  sql`
    with r as (
      select * from stroem_decide_gate(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text,
        ${sql.placeholder("approve")}::boolean, ${sql.placeholder("output")}::jsonb, ${sql.placeholder("error")}::text)
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text,
             case when ${sql.placeholder("approve")}::boolean then 'step.approved' else 'step.rejected' end, 'job',
             ${sql.placeholder("jobId")}::text,
             jsonb_strip_nulls(jsonb_build_object('stepName', ${sql.placeholder("stepName")}::text,
               'reason', ${sql.placeholder("error")}::text, 'waitedMs', round(r.waited_ms)))
      from r where r.result = 'ok'
    )
    select * from r`,
);

/**
 * The oldest ready steps of the server's action types, at most `limit`:
 * a range of `idx_step_live_claim` per type (a server step's route is its
 * action type), no lock.
 */
export const READY_SERVER_STEPS = statement<{ actionTypes: string[]; limit: number }>(
  "ready_server_steps",
  sql`
    select v.* from (
      select l.job_id, l.step_name, l.ready_at from unnest(${sql.placeholder("actionTypes")}::text[]) as t(action_type)
      cross join lateral (
        select s.job_id, s.step_name, s.ready_at from step_live s
        where s.status = 'ready' and s.route = t.action_type and s.ready_at <= now()
        order by s.ready_at, s.job_id, s.step_name
        limit ${sql.placeholder("limit")}::int
      ) l
      order by l.ready_at, l.job_id, l.step_name
      limit ${sql.placeholder("limit")}::int
    ) r
    cross join lateral (
      select v.* from job_step_state v where v.job_id = r.job_id and v.step_name = r.step_name
    ) v
    order by r.ready_at, r.job_id, r.step_name`,
);
