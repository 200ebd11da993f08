CREATE TABLE "step_route" (
	"route" text PRIMARY KEY NOT NULL,
	"ability" text NOT NULL,
	"tags" text[] NOT NULL
);
--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "required_ability" text;--> statement-breakpoint
ALTER TABLE "job_step" ADD COLUMN "required_tags" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "worker" ADD COLUMN "tags" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "worker" ADD COLUMN "exclusive" boolean DEFAULT false NOT NULL;--> statement-breakpoint
-- Every step so far is untagged and needs its action type: its route is its action type.
ALTER TABLE "step_live" ADD COLUMN "route" text;--> statement-breakpoint
UPDATE "step_live" SET "route" = "action_type";--> statement-breakpoint
ALTER TABLE "step_live" ALTER COLUMN "route" SET NOT NULL;--> statement-breakpoint
DROP INDEX "idx_step_live_claim";--> statement-breakpoint
CREATE INDEX "idx_step_live_claim" ON "step_live" USING btree ("route","ready_at","job_id","step_name") WHERE "step_live"."status" = 'ready';
