DROP INDEX "idx_job_status";--> statement-breakpoint
DROP INDEX "idx_job_step_status";--> statement-breakpoint
DROP INDEX "idx_job_step_claim";--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "steps_unfinished" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "steps_failed" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "dependants" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "deps_unfinished" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "deps_failed" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "deps_completed" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "propagated" boolean DEFAULT false NOT NULL;--> statement-breakpoint
CREATE INDEX "idx_job_step_unpropagated" ON "job_step" USING btree ("job_id") WHERE not "job_step"."propagated" and "job_step"."status" in ('completed', 'failed', 'skipped');--> statement-breakpoint
CREATE INDEX "idx_job_step_claim" ON "job_step" USING btree ("action_type","ready_at","job_id","step_name") WHERE "job_step"."status" = 'ready';--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_completed_at_check" CHECK (("job"."status" in ('completed', 'failed', 'cancelled')) = ("job"."completed_at" is not null));--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_step_counts_check" CHECK ("job"."steps_unfinished" >= 0 and "job"."steps_failed" >= 0);--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_running_check" CHECK ("job_step"."status" <> 'running' or ("job_step"."worker_id" is not null and "job_step"."started_at" is not null));--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_completed_at_check" CHECK (("job_step"."status" in ('completed', 'failed', 'skipped')) = ("job_step"."completed_at" is not null));--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_dep_counts_check" CHECK ("job_step"."deps_unfinished" >= 0 and "job_step"."deps_failed" >= 0 and "job_step"."deps_completed" >= 0);