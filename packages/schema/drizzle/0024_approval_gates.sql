ALTER TABLE "job_step" DROP CONSTRAINT "job_step_action_type_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_status_check";--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "suspended_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "idx_job_step_suspended" ON "job_step" USING btree ("suspended_at") WHERE "job_step"."status" = 'suspended' and "job_step"."timeout_secs" is not null;--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_suspended_check" CHECK ("job_step"."status" <> 'suspended' or "job_step"."suspended_at" is not null);--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_action_type_check" CHECK ("job_step"."action_type" in ('shell', 'docker', 'pod', 'approval'));--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_status_check" CHECK ("job_step"."status" in ('pending', 'ready', 'running', 'suspended', 'completed', 'failed', 'skipped', 'cancelled'));