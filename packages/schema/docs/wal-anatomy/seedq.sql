insert into step_queue (job_id, step_name, action_type, ready_at) select job_id, step_name, action_type, ready_at from job_step;
