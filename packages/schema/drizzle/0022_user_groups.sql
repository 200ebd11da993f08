CREATE TABLE "user_group_member" (
	"user_id" uuid NOT NULL,
	"group_name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "user_group_member_user_id_group_name_pk" PRIMARY KEY("user_id","group_name"),
	CONSTRAINT "user_group_member_name_check" CHECK (char_length("user_group_member"."group_name") between 1 and 200)
);
--> statement-breakpoint
ALTER TABLE "user" ADD COLUMN "is_admin" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "user_group_member" ADD CONSTRAINT "user_group_member_user_id_user_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user"("user_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_user_group_member_group" ON "user_group_member" USING btree ("group_name");