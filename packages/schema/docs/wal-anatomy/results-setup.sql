-- Variant e's append-only outcome tables (in the v2 database, after v2setup.sql).
create table if not exists step_result (
  job_id uuid not null, step_name text not null, attempt int not null, status text not null,
  worker_id uuid, started_at timestamptz, completed_at timestamptz not null default now(), output jsonb, error text,
  primary key (job_id, step_name, attempt)
);
create table if not exists job_result (
  job_id uuid primary key, status text not null, started_at timestamptz, completed_at timestamptz not null default now(), output jsonb
);
