CREATE TABLE "job_artifact" (
	"job_id" uuid NOT NULL,
	"name" text NOT NULL,
	"step_name" text,
	"content_type" text DEFAULT 'application/octet-stream' NOT NULL,
	"size_bytes" bigint NOT NULL,
	"storage_key" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_artifact_pk" PRIMARY KEY("job_id","name"),
	CONSTRAINT "job_artifact_check" CHECK (length("job_artifact"."name") between 1 and 512 and "job_artifact"."size_bytes" >= 0 and length("job_artifact"."storage_key") between 1 and 1024)
);
--> statement-breakpoint
CREATE TABLE "job_idempotency_key" (
	"workspace" text NOT NULL,
	"key" text NOT NULL,
	"job_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "job_idempotency_key_pk" PRIMARY KEY("workspace","key"),
	CONSTRAINT "job_idempotency_key_check" CHECK (length("job_idempotency_key"."key") between 1 and 512)
);
--> statement-breakpoint
CREATE TABLE "storage_deletion" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "storage_deletion_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"storage_key" text NOT NULL,
	"source" text NOT NULL,
	"job_id" uuid,
	"name" text,
	"recorded_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "storage_deletion_source_check" CHECK ("storage_deletion"."source" in ('artifact'))
);
--> statement-breakpoint
CREATE TABLE "task_state" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "task_state_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"workspace" text NOT NULL,
	"task_name" text DEFAULT '' NOT NULL,
	"storage_key" text NOT NULL,
	"size_bytes" bigint NOT NULL,
	"is_json" boolean DEFAULT false NOT NULL,
	"job_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "task_state_check" CHECK ("task_state"."size_bytes" >= 0 and length("task_state"."storage_key") between 1 and 1024)
);
--> statement-breakpoint
ALTER TABLE "job_artifact" ADD CONSTRAINT "job_artifact_job_id_job_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_idempotency_key" ADD CONSTRAINT "job_idempotency_key_job_id_job_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "task_state" ADD CONSTRAINT "task_state_job_id_job_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job"("job_id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_job_idempotency_key_expires" ON "job_idempotency_key" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "idx_job_idempotency_key_job" ON "job_idempotency_key" USING btree ("job_id");--> statement-breakpoint
CREATE INDEX "idx_task_state_latest" ON "task_state" USING btree ("workspace","task_name","id");--> statement-breakpoint
CREATE INDEX "idx_task_state_job" ON "task_state" USING btree ("job_id");