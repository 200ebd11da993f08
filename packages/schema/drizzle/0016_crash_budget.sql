ALTER TABLE "job_step" ADD COLUMN "rescues" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_rescues_check" CHECK ("job_step"."rescues" >= 0);