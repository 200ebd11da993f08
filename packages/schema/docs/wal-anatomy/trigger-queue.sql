-- (a) with the queue maintained by a trigger: job_step loses its status-predicate indexes and the worker FK.
drop index if exists idx_job_step_claim, idx_job_step_running_worker, idx_job_step_timeout, idx_job_step_unpropagated;
alter table job_step set (fillfactor = 50);
alter table job set (fillfactor = 50);
alter table job_step drop constraint if exists job_step_worker_id_worker_worker_id_fk;
create table step_queue (
  job_id uuid not null, step_name text not null, action_type text not null,
  ready_at timestamptz not null, worker_id uuid, started_at timestamptz, deadline timestamptz,
  primary key (job_id, step_name)
);
create index idx_step_queue_claim on step_queue (action_type, ready_at, job_id, step_name) where worker_id is null;
create index idx_step_queue_worker on step_queue (worker_id) where worker_id is not null;
create or replace function stroem_queue_sync() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    delete from step_queue q where q.job_id = old.job_id and q.step_name = old.step_name;
  elsif new.status = 'ready' or new.status = 'running' then
    insert into step_queue as q (job_id, step_name, action_type, ready_at, worker_id, started_at, deadline)
    values (new.job_id, new.step_name, new.action_type, coalesce(new.ready_at, now()),
            case when new.status = 'running' then new.worker_id end,
            case when new.status = 'running' then new.started_at end,
            case when new.status = 'running' then new.started_at + make_interval(secs => new.timeout_secs) end)
    on conflict (job_id, step_name) do update set action_type = excluded.action_type, ready_at = excluded.ready_at,
      worker_id = excluded.worker_id, started_at = excluded.started_at, deadline = excluded.deadline;
  elsif tg_op = 'UPDATE' then
    delete from step_queue q where q.job_id = old.job_id and q.step_name = old.step_name;
  end if;
  return null;
end $$;
create trigger job_step_queue_ins after insert on job_step for each row when (new.status in ('ready','running')) execute function stroem_queue_sync();
create trigger job_step_queue_upd after update on job_step for each row
  when ((old.status in ('ready','running') or new.status in ('ready','running')) and
        (old.status is distinct from new.status or old.ready_at is distinct from new.ready_at or old.worker_id is distinct from new.worker_id
         or old.started_at is distinct from new.started_at or old.timeout_secs is distinct from new.timeout_secs or old.action_type is distinct from new.action_type))
  execute function stroem_queue_sync();
create trigger job_step_queue_del after delete on job_step for each row when (old.status in ('ready','running')) execute function stroem_queue_sync();
