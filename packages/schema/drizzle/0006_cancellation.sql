ALTER TABLE "job_step" DROP CONSTRAINT "job_step_status_check";--> statement-breakpoint
ALTER TABLE "job_step" DROP CONSTRAINT "job_step_completed_at_check";--> statement-breakpoint
DROP INDEX "idx_job_step_unpropagated";--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "cancel_reason" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "cancel_requested_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "idx_job_step_unpropagated" ON "job_step" USING btree ("job_id") WHERE not "job_step"."propagated" and "job_step"."status" in ('completed', 'failed', 'skipped', 'cancelled');--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_status_check" CHECK ("job_step"."status" in ('pending', 'ready', 'running', 'completed', 'failed', 'skipped', 'cancelled'));--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_completed_at_check" CHECK (("job_step"."status" in ('completed', 'failed', 'skipped', 'cancelled')) = ("job_step"."completed_at" is not null));