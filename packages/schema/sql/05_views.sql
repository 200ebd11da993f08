-- The read views. Every read of a job's or a step's state in the repos goes
-- through them (`jobState` / `jobStepState` in src/tables.ts), never through
-- the tables, and SQL readers (dashboards, psql) should read them too: they
-- have the columns the design note lists, with the meaning it gives (a
-- running step shows `running`, its worker and `started_at`).
--
-- Today each is a projection of its table. The hot-path model chosen in
-- docs/data-model.md ("lean") keeps in `job` and `job_step` only what is
-- written once and overlays what changes (the live row, else the appended
-- outcome); these views are where that overlay will be read, so no reader
-- changes with it. The columns are listed, not `*`, so a column added to a
-- table reaches readers only when it is added here.
CREATE OR REPLACE VIEW job_state AS
SELECT j.job_id, j.workspace, j.task_name, j.mode, j.input, j.output, j.status, j.source_type,
       j.source_id, j.worker_id, j.revision, j.created_at, j.started_at, j.completed_at, j.log_path,
       j.cancel_reason, j.timeout_secs, j.error_message, j.steps_unfinished, j.steps_failed,
       j.source_job_id, j.restart_from_step, j.retry_of_job_id, j.retry_attempt, j.retry_job_id
FROM job j;
--> statement-breakpoint
CREATE OR REPLACE VIEW job_step_state AS
SELECT s.job_id, s.step_name, s.action_name, s.action_type, s.action_image, s.action_spec, s.input,
       s.output, s.status, s.worker_id, s.started_at, s.completed_at, s.error_message, s.depends_on,
       s.continue_on_failure, s.attempts, s.rescues, s.ready_at, s.dependants, s.deps_unfinished,
       s.deps_failed, s.deps_completed, s.propagated, s.max_retries, s.retry_backoff_secs,
       s.retry_strategy, s.retry_jitter, s.cancel_requested_at, s.timeout_secs, s.suspended_at,
       s.retry_history
FROM job_step s;
