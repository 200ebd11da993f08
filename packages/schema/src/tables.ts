import { sql } from "drizzle-orm";
import {
  type AnyPgColumn,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from "drizzle-orm/pg-core";
import {
  ACTION_TYPES,
  type ActionType,
  JOB_MODES,
  JOB_STATUSES,
  type JobMode,
  type JobStatus,
  SOURCE_TYPES,
  type SourceType,
  STEP_STATUSES,
  type StepStatus,
  WORKER_STATUSES,
  type WorkerStatus,
} from "./constants.js";

/** `column IN ('a', 'b')` for a CHECK constraint, from one of the constant lists. */
function oneOf(column: AnyPgColumn, values: readonly string[]) {
  return sql`${column} in (${sql.raw(values.map((v) => `'${v}'`).join(", "))})`;
}

const tz = { withTimezone: true, mode: "date" } as const;

export const worker = pgTable(
  "worker",
  {
    workerId: uuid("worker_id").primaryKey(),
    name: text("name").notNull(),
    capabilities: jsonb("capabilities").$type<string[]>().notNull().default(["shell"]),
    lastHeartbeat: timestamp("last_heartbeat", tz),
    registeredAt: timestamp("registered_at", tz).notNull().defaultNow(),
    status: text("status").$type<WorkerStatus>().notNull().default("active"),
  },
  (t) => [check("worker_status_check", oneOf(t.status, WORKER_STATUSES))],
);

export const job = pgTable(
  "job",
  {
    jobId: uuid("job_id").primaryKey(),
    workspace: text("workspace").notNull().default("default"),
    taskName: text("task_name").notNull(),
    mode: text("mode").$type<JobMode>().notNull().default("distributed"),
    input: jsonb("input").$type<unknown>(),
    output: jsonb("output").$type<unknown>(),
    status: text("status").$type<JobStatus>().notNull().default("pending"),
    sourceType: text("source_type").$type<SourceType>().notNull(),
    sourceId: text("source_id"),
    workerId: uuid("worker_id").references(() => worker.workerId),
    revision: text("revision"),
    createdAt: timestamp("created_at", tz).notNull().defaultNow(),
    startedAt: timestamp("started_at", tz),
    completedAt: timestamp("completed_at", tz),
    logPath: text("log_path"),
  },
  (t) => [
    check("job_mode_check", oneOf(t.mode, JOB_MODES)),
    check("job_status_check", oneOf(t.status, JOB_STATUSES)),
    check("job_source_type_check", oneOf(t.sourceType, SOURCE_TYPES)),
    index("idx_job_status").on(t.status),
    index("idx_job_created_at").on(t.createdAt),
    index("idx_job_workspace_task").on(t.workspace, t.taskName),
  ],
);

export const jobStep = pgTable(
  "job_step",
  {
    jobId: uuid("job_id")
      .notNull()
      .references(() => job.jobId, { onDelete: "cascade" }),
    stepName: text("step_name").notNull(),
    actionName: text("action_name").notNull(),
    actionType: text("action_type").$type<ActionType>().notNull().default("shell"),
    actionImage: text("action_image"),
    actionSpec: jsonb("action_spec").$type<unknown>(),
    input: jsonb("input").$type<unknown>(),
    output: jsonb("output").$type<unknown>(),
    status: text("status").$type<StepStatus>().notNull().default("pending"),
    workerId: uuid("worker_id").references(() => worker.workerId),
    startedAt: timestamp("started_at", tz),
    completedAt: timestamp("completed_at", tz),
    errorMessage: text("error_message"),
    /** The names of the steps this one waits for: the job keeps the graph it was created with. */
    dependsOn: text("depends_on").array().notNull().default(sql`'{}'::text[]`),
    /** Runs once its dependencies are terminal even if some failed; its own failure does not fail the job. */
    continueOnFailure: boolean("continue_on_failure").notNull().default(false),
    /**
     * How many times the step was claimed (moved to running). Exactly-once
     * execution shows as 1 on every finished step; recovery will guard on it.
     */
    attempts: integer("attempts").notNull().default(0),
    /** When the step last became ready: the claim serves the oldest first. */
    readyAt: timestamp("ready_at", tz),
  },
  (t) => [
    primaryKey({ columns: [t.jobId, t.stepName] }),
    check("job_step_action_type_check", oneOf(t.actionType, ACTION_TYPES)),
    check("job_step_status_check", oneOf(t.status, STEP_STATUSES)),
    check("job_step_ready_at_check", sql`${t.status} <> 'ready' or ${t.readyAt} is not null`),
    index("idx_job_step_status").on(t.status),
    // The claim's index: only claimable rows, in the claim's order. Its size
    // follows the ready backlog, not the history kept in the table, so a claim
    // costs the same with 0 or 1,000,000 finished steps around.
    index("idx_job_step_claim").on(t.readyAt, t.jobId, t.stepName).where(sql`${t.status} = 'ready'`),
    // Workers' and recovery's look-up of what a worker holds.
    index("idx_job_step_running_worker").on(t.workerId).where(sql`${t.status} = 'running'`),
  ],
);

/** A worker row as read from the database. */
export type Worker = typeof worker.$inferSelect;
/** A job row as read from the database. */
export type Job = typeof job.$inferSelect;
/** A job step row as read from the database. */
export type JobStep = typeof jobStep.$inferSelect;
