CREATE TABLE "api_key" (
	"key_hash" text PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"name" text NOT NULL,
	"prefix" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "api_key_key_hash_check" CHECK ("api_key"."key_hash" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "api_key_name_check" CHECK (char_length("api_key"."name") between 1 and 200),
	CONSTRAINT "api_key_prefix_check" CHECK (char_length("api_key"."prefix") <= 16)
);
--> statement-breakpoint
CREATE TABLE "refresh_token" (
	"token_hash" text PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"family_id" uuid NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone,
	"replaced_by" text,
	CONSTRAINT "refresh_token_token_hash_check" CHECK ("refresh_token"."token_hash" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "refresh_token_replaced_by_check" CHECK ("refresh_token"."replaced_by" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "refresh_token_retired_check" CHECK ("refresh_token"."replaced_by" is null or "refresh_token"."revoked_at" is not null)
);
--> statement-breakpoint
CREATE TABLE "user" (
	"user_id" uuid PRIMARY KEY NOT NULL,
	"name" text,
	"email" text NOT NULL,
	"password_hash" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "user_email_check" CHECK (char_length("user"."email") between 3 and 320 and "user"."email" like '%_@_%'),
	CONSTRAINT "user_name_check" CHECK (char_length("user"."name") between 1 and 200),
	CONSTRAINT "user_password_hash_check" CHECK (char_length("user"."password_hash") between 1 and 1024 and "user"."password_hash" ~ '^\$[a-z0-9-]+\$')
);
--> statement-breakpoint
CREATE TABLE "user_auth_link" (
	"user_id" uuid NOT NULL,
	"provider_id" text NOT NULL,
	"external_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "user_auth_link_user_id_provider_id_pk" PRIMARY KEY("user_id","provider_id"),
	CONSTRAINT "user_auth_link_provider_id_external_id_key" UNIQUE("provider_id","external_id"),
	CONSTRAINT "user_auth_link_provider_id_check" CHECK (char_length("user_auth_link"."provider_id") between 1 and 100),
	CONSTRAINT "user_auth_link_external_id_check" CHECK (char_length("user_auth_link"."external_id") between 1 and 512)
);
--> statement-breakpoint
ALTER TABLE "api_key" ADD CONSTRAINT "api_key_user_id_user_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user"("user_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "refresh_token" ADD CONSTRAINT "refresh_token_user_id_user_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user"("user_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "user_auth_link" ADD CONSTRAINT "user_auth_link_user_id_user_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user"("user_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idx_api_key_user" ON "api_key" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "idx_refresh_token_user" ON "refresh_token" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "idx_refresh_token_family" ON "refresh_token" USING btree ("family_id");--> statement-breakpoint
CREATE INDEX "idx_refresh_token_expires_at" ON "refresh_token" USING btree ("expires_at");--> statement-breakpoint
CREATE UNIQUE INDEX "user_email_lower_key" ON "user" USING btree (lower("email"));