ALTER TABLE "job" ADD COLUMN "timeout_secs" integer;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "error_message" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "timeout_secs" integer;--> statement-breakpoint
CREATE INDEX "idx_job_timeout" ON "job" USING btree ("created_at") WHERE "job"."completed_at" is null and "job"."timeout_secs" is not null;--> statement-breakpoint
CREATE INDEX "idx_job_step_timeout" ON "job_step" USING btree ("started_at") WHERE "job_step"."status" = 'running' and "job_step"."timeout_secs" is not null;--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_timeout_secs_check" CHECK ("job"."timeout_secs" > 0);--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_timeout_secs_check" CHECK ("job_step"."timeout_secs" > 0);