ALTER TABLE "job_step" ADD COLUMN "max_retries" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "retry_backoff_secs" integer DEFAULT 10 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "retry_strategy" text DEFAULT 'exponential' NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "retry_jitter" double precision DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "retry_history" jsonb DEFAULT '[]'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_retry_strategy_check" CHECK ("job_step"."retry_strategy" in ('fixed', 'exponential'));--> statement-breakpoint
ALTER TABLE "job_step" ADD CONSTRAINT "job_step_retry_policy_check" CHECK ("job_step"."max_retries" between 0 and 1000 and "job_step"."retry_backoff_secs" between 0 and 86400 and "job_step"."retry_jitter" between 0 and 1);