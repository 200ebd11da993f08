ALTER TABLE "job_live" DROP CONSTRAINT "job_live_step_counts_check";--> statement-breakpoint
ALTER TABLE "job_live" ADD COLUMN "depth" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_live" ADD CONSTRAINT "job_live_step_counts_check" CHECK ("job_live"."steps_unfinished" >= 0 and "job_live"."steps_failed" >= 0 and "job_live"."depth" >= 0);