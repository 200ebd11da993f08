-- seed.sql, plus the live rows (databases ql: live-setup.sql applied)
truncate job_live, job_result, step_live, step_result;
\i seed.sql
insert into job_live (job_id, steps_unfinished) select md5('j'||i)::uuid, 1 from generate_series(1, :n) i;
insert into step_live (job_id, step_name, action_type, status, ready_at) select md5('j'||i)::uuid, 'only', 'shell', 'ready', now() from generate_series(1, :n) i;
