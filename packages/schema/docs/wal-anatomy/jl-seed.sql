-- seed.sql, plus the job_live rows of job-live.pgb's database (qj)
truncate job_live, job_result;
\i seed.sql
insert into job_live (job_id, steps_unfinished) select md5('j'||i)::uuid, 1 from generate_series(1, :n) i;
