CREATE TABLE "job" (
	"job_id" uuid PRIMARY KEY NOT NULL,
	"workspace" text DEFAULT 'default' NOT NULL,
	"task_name" text NOT NULL,
	"mode" text DEFAULT 'distributed' NOT NULL,
	"input" jsonb,
	"output" jsonb,
	"status" text DEFAULT 'pending' NOT NULL,
	"source_type" text NOT NULL,
	"source_id" text,
	"worker_id" uuid,
	"revision" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"log_path" text,
	CONSTRAINT "job_mode_check" CHECK ("job"."mode" in ('local', 'distributed')),
	CONSTRAINT "job_status_check" CHECK ("job"."status" in ('pending', 'running', 'completed', 'failed', 'cancelled')),
	CONSTRAINT "job_source_type_check" CHECK ("job"."source_type" in ('trigger', 'user', 'api', 'webhook'))
);
--> statement-breakpoint
CREATE TABLE "job_step" (
	"job_id" uuid NOT NULL,
	"step_name" text NOT NULL,
	"action_name" text NOT NULL,
	"action_type" text DEFAULT 'shell' NOT NULL,
	"action_image" text,
	"action_spec" jsonb,
	"input" jsonb,
	"output" jsonb,
	"status" text DEFAULT 'pending' NOT NULL,
	"worker_id" uuid,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"error_message" text,
	"depends_on" text[] DEFAULT '{}'::text[] NOT NULL,
	"continue_on_failure" boolean DEFAULT false NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"ready_at" timestamp with time zone,
	CONSTRAINT "job_step_job_id_step_name_pk" PRIMARY KEY("job_id","step_name"),
	CONSTRAINT "job_step_action_type_check" CHECK ("job_step"."action_type" in ('shell', 'docker', 'pod')),
	CONSTRAINT "job_step_status_check" CHECK ("job_step"."status" in ('pending', 'ready', 'running', 'completed', 'failed', 'skipped')),
	CONSTRAINT "job_step_ready_at_check" CHECK ("job_step"."status" <> 'ready' or "job_step"."ready_at" is not null)
);
--> statement-breakpoint
CREATE TABLE "worker" (
	"worker_id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"capabilities" jsonb DEFAULT '["shell"]'::jsonb NOT NULL,
	"last_heartbeat" timestamp with time zone,
	"registered_at" timestamp with time zone DEFAULT now() NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	CONSTRAINT "worker_status_check" CHECK ("worker"."status" in ('active', 'inactive'))
);
--> statement-breakpoint
ALTER TABLE "job" ADD CONSTRAINT "job_worker_id_worker_worker_id_fk" FOREIGN KEY ("worker_id") REFERENCES "worker"("worker_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_job_id_job_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_worker_id_worker_worker_id_fk" FOREIGN KEY ("worker_id") REFERENCES "worker"("worker_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_job_status" ON "job" USING btree ("status");--> statement-breakpoint
CREATE INDEX "idx_job_created_at" ON "job" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "idx_job_workspace_task" ON "job" USING btree ("workspace","task_name");--> statement-breakpoint
CREATE INDEX "idx_job_step_status" ON "job_step" USING btree ("status");--> statement-breakpoint
CREATE INDEX "idx_job_step_claim" ON "job_step" USING btree ("ready_at","job_id","step_name") WHERE "job_step"."status" = 'ready';--> statement-breakpoint
CREATE INDEX "idx_job_step_running_worker" ON "job_step" USING btree ("worker_id") WHERE "job_step"."status" = 'running';