import { sql } from "drizzle-orm";
import { statement } from "../statement.js";

/** What `stroem_decide_condition` answers. */
export type ConditionRow = {
  result: "ok" | "not_found" | "not_conditional" | "invalid_transition";
  step_status: string | null;
  job_status: string | null;
  route: string | null;
  promoted: string[] | null;
  skipped: string[] | null;
};

export type ConditionValues = {
  jobId: string;
  stepName: string;
  run: boolean;
  actorType: string;
  actorId: string | null;
};

/**
 * The server's decision on a step's `when` (`stroem_decide_condition`,
 * `packages/schema/sql/47_server_steps.sql`) and, when it was taken (`ok`),
 * `step.condition_decided` under its job (details: the step, `run`).
 */
export const DECIDE_CONDITION = statement<ConditionValues>(
  "decide_condition",
  sql`
    with r as (
      select * from stroem_decide_condition(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text,
        ${sql.placeholder("run")}::boolean)
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text, 'step.condition_decided', 'job',
             ${sql.placeholder("jobId")}::text,
             jsonb_build_object('stepName', ${sql.placeholder("stepName")}::text, 'run', ${sql.placeholder("run")}::boolean)
      from r where r.result = 'ok'
    )
    select * from r`,
);

/** What `stroem_start_child` answers. */
export type StartChildRow = {
  result: "ok" | "repeated" | "not_found" | "not_task" | "invalid_transition";
  step_status: string | null;
  job_status: string | null;
  action_type: string | null;
  child_job_id: string | null;
  /** The parent job's `job_live.depth`. */
  depth: number | null;
};

/** The parent's half of `startChild`: its task step suspended under the parent's lock (FOR UPDATE). */
export const START_CHILD = statement<{ jobId: string; stepName: string }>(
  "start_child",
  sql`select * from stroem_start_child(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text)`,
);

/** What `stroem_expand_loop` answers. */
export type ExpandRow = {
  result: "ok" | "repeated" | "not_found" | "not_loop" | "invalid_transition";
  step_status: string | null;
  job_status: string | null;
  instances: number | null;
  promoted: string[] | null;
  skipped: string[] | null;
};

export type ExpandValues = {
  jobId: string;
  stepName: string;
  items: string;
  sequential: boolean;
  actorType: string;
  actorId: string | null;
};

/**
 * Expands a loop step (`stroem_expand_loop`) and, when it did (`ok`),
 * records `step.expanded` under its job (details: the step, how many
 * instances, `sequential`).
 */
export const EXPAND_LOOP = statement<ExpandValues>(
  "expand_loop",
  sql`
    with r as (
      select * from stroem_expand_loop(${sql.placeholder("jobId")}::uuid, ${sql.placeholder("stepName")}::text,
        ${sql.placeholder("items")}::jsonb, ${sql.placeholder("sequential")}::boolean)
    ), audit as (
      insert into audit_event (actor_type, actor_id, action, entity_type, entity_id, details)
      select ${sql.placeholder("actorType")}::text, ${sql.placeholder("actorId")}::text, 'step.expanded', 'job',
             ${sql.placeholder("jobId")}::text,
             jsonb_build_object('stepName', ${sql.placeholder("stepName")}::text, 'instances', r.instances,
                                'sequential', ${sql.placeholder("sequential")}::boolean)
      from r where r.result = 'ok'
    )
    select * from r`,
);
