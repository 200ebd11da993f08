-- The audit log is append-only. A statement-level trigger refuses UPDATE, DELETE and TRUNCATE on
-- audit_event with SQLSTATE 23001 (restrict_violation) and the constraint
-- name audit_event_append_only (the repos translate it into
-- AuditLogAppendOnlyError). The one exception is the retention purge: a
-- DELETE in a transaction that has set the custom setting
-- stroem.audit_purge to 'on' (SET LOCAL, so it ends with the transaction).
--
-- This guards against mistakes (a stray DELETE, a script, a bug), not against
-- someone who means it: the table's owner or a superuser can set the same
-- setting, disable the trigger (ALTER TABLE ... DISABLE TRIGGER,
-- session_replication_role = replica) or drop it. Keeping events from the
-- database's own administrators takes shipping them elsewhere (logical
-- replication, or a role without those rights).
CREATE OR REPLACE FUNCTION stroem_audit_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('stroem.audit_purge', true) = 'on' THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
    USING ERRCODE = 'restrict_violation',
          CONSTRAINT = 'audit_event_append_only',
          HINT = 'old events are removed only by the retention purge (purgeFinished)';
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER "audit_event_append_only"
  BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION stroem_audit_event_append_only();
