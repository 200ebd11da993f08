-- Job lineage (reruns, restarts, job-level retries). The new columns are
-- null or 0 on every existing row (ADD COLUMN with a constant default
-- rewrites nothing); each constraint and index reads job once, under the
-- migration's lock.
ALTER TABLE "job" DROP CONSTRAINT "job_source_type_check";--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "source_job_id" uuid;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "restart_from_step" text;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "retry_of_job_id" uuid;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "retry_attempt" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "retry_job_id" uuid;--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_source_job_id_fk" FOREIGN KEY ("source_job_id") REFERENCES "job"("job_id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_retry_of_job_id_fk" FOREIGN KEY ("retry_of_job_id") REFERENCES "job"("job_id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_job_source_job" ON "job" USING btree ("source_job_id") WHERE "job"."source_job_id" is not null;--> statement-breakpoint
CREATE INDEX "idx_job_retry_of" ON "job" USING btree ("retry_of_job_id","retry_attempt") WHERE "job"."retry_of_job_id" is not null;--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_lineage_check" CHECK ("job"."retry_attempt" >= 0 and ("job"."retry_attempt" = 0 or "job"."source_type" = 'retry') and ("job"."restart_from_step" is null or "job"."source_type" = 'restart'));--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_source_type_check" CHECK ("job"."source_type" in ('trigger', 'user', 'api', 'webhook', 'rerun', 'restart', 'retry'));
