CREATE TABLE "job_live" (
	"job_id" uuid PRIMARY KEY NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"worker_id" uuid,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"output" jsonb,
	"error_message" text,
	"cancel_reason" text,
	"steps_unfinished" integer DEFAULT 0 NOT NULL,
	"steps_failed" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "job_live_status_check" CHECK ("job_live"."status" in ('pending', 'running', 'completed', 'failed', 'cancelled')),
	CONSTRAINT "job_live_step_counts_check" CHECK ("job_live"."steps_unfinished" >= 0 and "job_live"."steps_failed" >= 0)
);
--> statement-breakpoint
CREATE TABLE "job_result" (
	"job_id" uuid PRIMARY KEY NOT NULL,
	"status" text NOT NULL,
	"worker_id" uuid,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone DEFAULT now() NOT NULL,
	"output" jsonb,
	"error_message" text,
	"cancel_reason" text,
	"steps_unfinished" integer DEFAULT 0 NOT NULL,
	"steps_failed" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "job_result_status_check" CHECK ("job_result"."status" in ('completed', 'failed', 'cancelled'))
);
--> statement-breakpoint
CREATE TABLE "step_live" (
	"job_id" uuid NOT NULL,
	"step_name" text NOT NULL,
	"action_type" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"ready_at" timestamp with time zone,
	"worker_id" uuid,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"output" jsonb,
	"error_message" text,
	"attempts" integer DEFAULT 0 NOT NULL,
	"rescues" integer DEFAULT 0 NOT NULL,
	"max_retries" integer DEFAULT 0 NOT NULL,
	"retry_history" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"deps_total" integer DEFAULT 0 NOT NULL,
	"continue_on_failure" boolean DEFAULT false NOT NULL,
	"dependants" text[] DEFAULT '{}'::text[] NOT NULL,
	"timeout_secs" integer,
	"deps_unfinished" integer DEFAULT 0 NOT NULL,
	"deps_failed" integer DEFAULT 0 NOT NULL,
	"deps_completed" integer DEFAULT 0 NOT NULL,
	"propagated" boolean DEFAULT false NOT NULL,
	"cancel_requested_at" timestamp with time zone,
	"suspended_at" timestamp with time zone,
	"job_started_at" timestamp with time zone,
	CONSTRAINT "step_live_pk" PRIMARY KEY("job_id","step_name"),
	CONSTRAINT "step_live_status_check" CHECK ("step_live"."status" in ('pending', 'ready', 'running', 'suspended', 'completed', 'failed', 'skipped', 'cancelled')),
	CONSTRAINT "step_live_ready_at_check" CHECK ("step_live"."status" <> 'ready' or "step_live"."ready_at" is not null),
	CONSTRAINT "step_live_running_check" CHECK ("step_live"."status" <> 'running' or ("step_live"."worker_id" is not null and "step_live"."started_at" is not null)),
	CONSTRAINT "step_live_completed_at_check" CHECK (("step_live"."status" in ('completed', 'failed', 'skipped', 'cancelled')) = ("step_live"."completed_at" is not null)),
	CONSTRAINT "step_live_suspended_check" CHECK ("step_live"."status" <> 'suspended' or "step_live"."suspended_at" is not null),
	CONSTRAINT "step_live_counts_check" CHECK ("step_live"."rescues" >= 0 and "step_live"."deps_unfinished" >= 0 and "step_live"."deps_failed" >= 0 and "step_live"."deps_completed" >= 0)
);
--> statement-breakpoint
CREATE TABLE "step_result" (
	"job_id" uuid NOT NULL,
	"step_name" text NOT NULL,
	"action_type" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"ready_at" timestamp with time zone,
	"worker_id" uuid,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"output" jsonb,
	"error_message" text,
	"attempts" integer DEFAULT 0 NOT NULL,
	"rescues" integer DEFAULT 0 NOT NULL,
	"max_retries" integer DEFAULT 0 NOT NULL,
	"retry_history" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"deps_total" integer DEFAULT 0 NOT NULL,
	"continue_on_failure" boolean DEFAULT false NOT NULL,
	"dependants" text[] DEFAULT '{}'::text[] NOT NULL,
	"timeout_secs" integer,
	"deps_unfinished" integer DEFAULT 0 NOT NULL,
	"deps_failed" integer DEFAULT 0 NOT NULL,
	"deps_completed" integer DEFAULT 0 NOT NULL,
	"propagated" boolean DEFAULT false NOT NULL,
	"cancel_requested_at" timestamp with time zone,
	"suspended_at" timestamp with time zone,
	"job_started_at" timestamp with time zone,
	CONSTRAINT "step_result_pk" PRIMARY KEY("job_id","step_name"),
	CONSTRAINT "step_result_status_check" CHECK ("step_result"."status" in ('completed', 'failed', 'skipped', 'cancelled'))
);
--> statement-breakpoint
-- Hand-written (hot path v2): the read views depend on the columns this
-- migration moves; 0028 creates them again over the new tables.
DROP VIEW IF EXISTS job_step_state;
--> statement-breakpoint
DROP VIEW IF EXISTS job_state;
--> statement-breakpoint
-- Backfill, so a database upgraded with jobs in flight carries on: finished
-- jobs and steps become results; unfinished ones live rows (a job of
-- exactly one step has no job_live row: its step's live row is its state).
-- The definition's max_retries becomes the policy the step was created with
-- (each free rescue had raised it by one; the live row keeps the raised value).
INSERT INTO job_result (job_id, status, worker_id, started_at, completed_at, output, error_message, cancel_reason,
                        steps_unfinished, steps_failed)
SELECT j.job_id, j.status, j.worker_id, j.started_at, coalesce(j.completed_at, now()), j.output, j.error_message,
       j.cancel_reason, j.steps_unfinished, j.steps_failed
FROM job j WHERE j.status IN ('completed', 'failed', 'cancelled');
--> statement-breakpoint
INSERT INTO job_live (job_id, status, worker_id, started_at, output, error_message, cancel_reason, steps_unfinished,
                      steps_failed)
SELECT j.job_id, j.status, j.worker_id, j.started_at, j.output, j.error_message, j.cancel_reason, j.steps_unfinished,
       j.steps_failed
FROM job j
WHERE j.status IN ('pending', 'running')
  AND (SELECT count(*) FROM job_step s WHERE s.job_id = j.job_id) <> 1;
--> statement-breakpoint
INSERT INTO step_live (job_id, step_name, action_type, status, ready_at, worker_id, started_at, completed_at, output,
                       error_message, attempts, rescues, max_retries, retry_history, deps_total, continue_on_failure,
                       dependants, timeout_secs, deps_unfinished, deps_failed, deps_completed, propagated,
                       cancel_requested_at, suspended_at, job_started_at)
SELECT s.job_id, s.step_name, s.action_type, s.status, s.ready_at, s.worker_id, s.started_at, s.completed_at, s.output,
       s.error_message, s.attempts, s.rescues, s.max_retries, s.retry_history, cardinality(s.depends_on),
       s.continue_on_failure, s.dependants, s.timeout_secs, s.deps_unfinished, s.deps_failed, s.deps_completed,
       s.propagated, s.cancel_requested_at, s.suspended_at,
       CASE WHEN NOT EXISTS (SELECT 1 FROM job_live l WHERE l.job_id = j.job_id) THEN j.started_at END
FROM job_step s JOIN job j ON j.job_id = s.job_id
WHERE s.status NOT IN ('completed', 'failed', 'skipped', 'cancelled')
   OR (NOT s.propagated AND j.status IN ('pending', 'running'));
--> statement-breakpoint
INSERT INTO step_result (job_id, step_name, action_type, status, ready_at, worker_id, started_at, completed_at, output,
                         error_message, attempts, rescues, max_retries, retry_history, deps_total, continue_on_failure,
                         dependants, timeout_secs, deps_unfinished, deps_failed, deps_completed, propagated,
                         cancel_requested_at, suspended_at, job_started_at)
SELECT s.job_id, s.step_name, s.action_type, s.status, s.ready_at, s.worker_id, s.started_at, s.completed_at, s.output,
       s.error_message, s.attempts, s.rescues, s.max_retries, s.retry_history, cardinality(s.depends_on),
       s.continue_on_failure, s.dependants, s.timeout_secs, s.deps_unfinished, s.deps_failed, s.deps_completed,
       s.propagated, s.cancel_requested_at, s.suspended_at, j.started_at
FROM job_step s JOIN job j ON j.job_id = s.job_id
WHERE s.status IN ('completed', 'failed', 'skipped', 'cancelled')
  AND NOT (NOT s.propagated AND j.status IN ('pending', 'running'));
--> statement-breakpoint
UPDATE job_step SET max_retries = max_retries - rescues WHERE rescues > 0;
--> statement-breakpoint
ALTER TABLE "job" DROP CONSTRAINT "job_status_check";--> statement-breakpoint
ALTER TABLE "job" DROP CONSTRAINT "job_completed_at_check";--> statement-breakpoint
ALTER TABLE "job" DROP CONSTRAINT "job_step_counts_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_status_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_ready_at_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_running_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_completed_at_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_suspended_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_rescues_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_dep_counts_check";--> statement-breakpoint
ALTER TABLE "job" DROP CONSTRAINT "job_worker_id_worker_worker_id_fk";
--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_worker_id_worker_worker_id_fk";
--> statement-breakpoint
DROP INDEX "idx_job_step_claim";--> statement-breakpoint
DROP INDEX "idx_job_step_unpropagated";--> statement-breakpoint
DROP INDEX "idx_job_step_timeout";--> statement-breakpoint
DROP INDEX "idx_job_step_error_search";--> statement-breakpoint
DROP INDEX "idx_job_step_suspended";--> statement-breakpoint
DROP INDEX "idx_job_step_running_worker";--> statement-breakpoint
ALTER TABLE "job_live" ADD CONSTRAINT "job_live_worker_id_fk" FOREIGN KEY ("worker_id") REFERENCES "worker"("worker_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "step_live" ADD CONSTRAINT "step_live_worker_id_fk" FOREIGN KEY ("worker_id") REFERENCES "worker"("worker_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_job_result_completed" ON "job_result" USING btree ("completed_at");--> statement-breakpoint
CREATE INDEX "idx_step_live_claim" ON "step_live" USING btree ("action_type","ready_at","job_id","step_name") WHERE "step_live"."status" = 'ready';--> statement-breakpoint
CREATE INDEX "idx_step_live_unpropagated" ON "step_live" USING btree ("job_id") WHERE "step_live"."status" in ('completed', 'failed', 'skipped', 'cancelled');--> statement-breakpoint
CREATE INDEX "idx_step_live_timeout" ON "step_live" USING btree ("started_at") WHERE "step_live"."status" = 'running' and "step_live"."timeout_secs" is not null;--> statement-breakpoint
CREATE INDEX "idx_step_live_suspended" ON "step_live" USING btree ("suspended_at") WHERE "step_live"."status" = 'suspended' and "step_live"."timeout_secs" is not null;--> statement-breakpoint
CREATE INDEX "idx_step_live_running_worker" ON "step_live" USING btree ("worker_id") WHERE "step_live"."status" = 'running';--> statement-breakpoint
CREATE INDEX "idx_step_live_error_search" ON "step_live" USING gin (to_tsvector('simple'::regconfig, error_message)) WHERE "step_live"."error_message" is not null;--> statement-breakpoint
CREATE INDEX "idx_step_result_error_search" ON "step_result" USING gin (to_tsvector('simple'::regconfig, error_message)) WHERE "step_result"."error_message" is not null;--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "output";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "status";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "worker_id";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "started_at";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "completed_at";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "cancel_reason";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "error_message";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "steps_unfinished";--> statement-breakpoint
ALTER TABLE "job" DROP COLUMN "steps_failed";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "output";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "status";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "worker_id";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "started_at";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "completed_at";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "error_message";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "attempts";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "rescues";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "ready_at";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "deps_unfinished";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "deps_failed";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "deps_completed";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "propagated";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "cancel_requested_at";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "suspended_at";--> statement-breakpoint
ALTER TABLE "job_step" DROP COLUMN "retry_history";