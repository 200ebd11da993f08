CREATE TABLE "job_deadline" (
	"job_id" uuid PRIMARY KEY NOT NULL,
	"deadline" timestamp with time zone NOT NULL
);
--> statement-breakpoint
DROP INDEX "idx_job_timeout";--> statement-breakpoint
ALTER TABLE "job_deadline" ADD CONSTRAINT "job_deadline_job_id_job_job_id_fk" FOREIGN KEY ("job_id") REFERENCES "job"("job_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_job_deadline" ON "job_deadline" USING btree ("deadline");