CREATE TABLE "audit_event" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "audit_event_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"occurred_at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor_type" text NOT NULL,
	"actor_id" text,
	"action" text NOT NULL,
	"entity_type" text NOT NULL,
	"entity_id" text NOT NULL,
	"details" jsonb DEFAULT '{}'::jsonb NOT NULL,
	CONSTRAINT "audit_event_actor_type_check" CHECK ("audit_event"."actor_type" in ('user', 'worker', 'system'))
);
--> statement-breakpoint
CREATE INDEX "idx_audit_event_time" ON "audit_event" USING btree ("occurred_at","id");--> statement-breakpoint
CREATE INDEX "idx_audit_event_entity" ON "audit_event" USING btree ("entity_type","entity_id","occurred_at","id");