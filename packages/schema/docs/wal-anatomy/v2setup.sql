-- The queue variants (b to e): job_step without its status-predicate indexes and without the
-- foreign key to worker (the key share lock it takes on the worker row at every claim), a narrow step_queue.
drop index if exists idx_job_step_claim, idx_job_step_running_worker, idx_job_step_timeout, idx_job_step_unpropagated;
alter table job_step set (fillfactor = 80);
alter table job_step drop constraint if exists job_step_worker_id_worker_worker_id_fk;
create table step_queue (
  job_id uuid not null, step_name text not null, action_type text not null,
  ready_at timestamptz not null, worker_id uuid, attempt int not null default 0, leased_at timestamptz,
  primary key (job_id, step_name)
);
create index idx_step_queue_claim on step_queue (action_type, ready_at, job_id, step_name) where worker_id is null;
create index idx_step_queue_worker on step_queue (worker_id) where worker_id is not null;
