-- Narrow live/result tables for steps (step-live.pgb, both-live.pgb), beside job_live/job_result (job-live.pgb).
create table if not exists job_live (job_id uuid primary key, status text not null default 'pending', worker_id uuid, started_at timestamptz,
  steps_unfinished integer not null default 0, steps_failed integer not null default 0) with (fillfactor = 50);
create table if not exists job_result (job_id uuid primary key, status text not null, worker_id uuid, started_at timestamptz,
  completed_at timestamptz not null default now(), output jsonb, error_message text, cancel_reason text,
  steps_unfinished integer not null default 0, steps_failed integer not null default 0);
create table if not exists step_live (job_id uuid not null, step_name text not null, action_type text not null,
  status text not null, ready_at timestamptz, worker_id uuid, started_at timestamptz, attempts integer not null default 0,
  dependants text[] not null default '{}', deps_unfinished integer not null default 0, deps_failed integer not null default 0,
  deps_completed integer not null default 0, max_retries integer not null default 0, timeout_secs integer,
  primary key (job_id, step_name));
create index if not exists idx_step_live_claim on step_live (action_type, ready_at, job_id, step_name) where status = 'ready';
create index if not exists idx_step_live_running on step_live (worker_id) where status = 'running';
create table if not exists step_result (job_id uuid not null, step_name text not null, status text not null, worker_id uuid,
  started_at timestamptz, completed_at timestamptz not null default now(), attempts integer not null, output jsonb,
  error_message text, primary key (job_id, step_name));
