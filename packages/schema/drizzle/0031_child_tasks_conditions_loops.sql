ALTER TABLE "job_step" DROP CONSTRAINT "job_step_action_type_check";--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "parent_job_id" uuid;--> statement-breakpoint
ALTER TABLE "job" ADD COLUMN "parent_step_name" text;--> statement-breakpoint
ALTER TABLE "job_live" ADD COLUMN "parent_job_id" uuid;--> statement-breakpoint
ALTER TABLE "job_live" ADD COLUMN "parent_step_name" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "when_condition" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "for_each" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "loop_source" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "loop_index" integer;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "loop_total" integer;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "loop_item" jsonb;--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_parent_job_id_fk" FOREIGN KEY ("parent_job_id") REFERENCES "job"("job_id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_job_parent" ON "job" USING btree ("parent_job_id","created_at") WHERE "job"."parent_job_id" is not null;--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_parent_check" CHECK ("job"."parent_job_id" is null or "job"."parent_step_name" is not null);--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_loop_check" CHECK (("job_step"."loop_source" is null) = ("job_step"."loop_index" is null) and ("job_step"."loop_source" is null or ("job_step"."loop_index" >= 0 and "job_step"."loop_index" < "job_step"."loop_total" and "job_step"."for_each" is null)) and ("job_step"."loop_total" is null or "job_step"."loop_total" >= 0));--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_action_type_check" CHECK ("job_step"."action_type" in ('shell', 'docker', 'pod', 'approval', 'task'));