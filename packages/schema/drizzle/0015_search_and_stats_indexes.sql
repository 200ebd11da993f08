DROP INDEX "idx_job_created_at";--> statement-breakpoint
DROP INDEX "idx_job_workspace_task";--> statement-breakpoint
CREATE INDEX "idx_job_workspace_created" ON "job" USING btree ("workspace","created_at","job_id");--> statement-breakpoint
CREATE INDEX "idx_job_search" ON "job" USING gin ((to_tsvector('simple'::regconfig, task_name) || jsonb_to_tsvector('simple'::regconfig, coalesce(input, 'null'::jsonb), '["string", "numeric"]'::jsonb)));--> statement-breakpoint
CREATE INDEX "idx_job_step_error_search" ON "job_step" USING gin (to_tsvector('simple'::regconfig, error_message)) WHERE "job_step"."error_message" is not null;--> statement-breakpoint
CREATE INDEX "idx_job_created_at" ON "job" USING btree ("created_at","job_id");--> statement-breakpoint
CREATE INDEX "idx_job_workspace_task" ON "job" USING btree ("workspace","task_name","created_at","job_id");