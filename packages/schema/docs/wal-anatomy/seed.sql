-- :n one-step jobs, ready
insert into worker (worker_id, name) select ('00000000-0000-0000-0000-'||lpad(i::text,12,'0'))::uuid, 'w'||i from generate_series(1,8) i on conflict do nothing;
insert into job (job_id, task_name, source_type, steps_unfinished) select md5('j'||i)::uuid, 'bench', 'api', 1 from generate_series(1, :n) i;
insert into job_step (job_id, step_name, action_name, action_type, status, ready_at, action_spec, input)
  select md5('j'||i)::uuid, 'only', 'run', 'shell', 'ready', now(), '{"cmd":"echo hello world"}', '{"n":1}' from generate_series(1, :n) i;
