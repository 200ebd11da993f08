-- The server's other steps: conditions, child tasks and for_each loops.
-- Each waits, ready, on a route of its own (SERVER_ROUTES / the action type
-- `task`) that no worker claims; the server finds it there
-- (JobStepRepo.readyServerSteps) or in the `promoted` list of the report
-- that made it ready, and decides. Every decision locks the job first (the
-- lock order), so of two servers deciding the same step, and of a decision
-- and a cancel, the first decides and the others find it moved on.
--
-- A child job's lock is taken before its parent's (between jobs, a deeper
-- one first: job_live.depth; reportMany locks its jobs so): the statement that ends
-- a child (its last report, its cancel, its timeout) holds the child and
-- then ends the parent's step (stroem_child_ended, from the trigger that
-- moves the child's job_live row to job_result). A cancel of the parent
-- therefore never waits for a child while holding the parent's lock: it
-- holds the parent FOR KEY SHARE (which a child's end does not wait for,
-- and which keeps new children from being started: stroem_start_child
-- takes FOR UPDATE), cancels the unfinished children deepest first, and
-- only then locks the parent itself.

-- stroem_decide_condition: the server's decision on a ready step with a
-- `when` (route '@when'): run releases it to workers (its own route, or
-- '@loop' for a for_each step; ready_at = now(), a wake-up), skip skips it
-- and advances the job from there (its dependants see a skipped
-- dependency). `result`: ok | not_found | not_conditional (the step has no
-- `when`) | invalid_transition (decided already, or not ready: step_status
-- and route say which).
CREATE OR REPLACE FUNCTION stroem_decide_condition(p_job_id uuid, p_step_name text, p_run boolean,
  OUT result text, OUT step_status text, OUT job_status text, OUT route text, OUT promoted text[], OUT skipped text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_step record;
  v_skip record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  SELECT l.status INTO job_status FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  END IF;
  SELECT s.status, s.route, d.when_condition, d.for_each, d.required_ability, d.action_type, d.required_tags
  INTO v_step
  FROM job_step d LEFT JOIN step_live s ON s.job_id = d.job_id AND s.step_name = d.step_name
  WHERE d.job_id = p_job_id AND d.step_name = p_step_name;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  IF v_step.when_condition IS NULL THEN
    result := 'not_conditional';
    SELECT s.status INTO step_status FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    RETURN;
  END IF;
  IF v_step.status IS DISTINCT FROM 'ready' OR v_step.route <> '@when' THEN
    result := 'invalid_transition';
    route := v_step.route;
    SELECT s.status INTO step_status FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    RETURN;
  END IF;
  IF p_run THEN
    route := CASE WHEN v_step.for_each IS NOT NULL THEN '@loop'
                  ELSE stroem_route(coalesce(v_step.required_ability, v_step.action_type), v_step.required_tags) END;
    UPDATE step_live s SET route = stroem_decide_condition.route, ready_at = now()
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    PERFORM pg_notify(stroem_ready_channel(), stroem_route_ability(route));
    result := 'ok';
    step_status := 'ready';
    RETURN;
  END IF;
  SELECT * INTO v_skip FROM stroem_skip_step(p_job_id, p_step_name);
  result := v_skip.result;
  step_status := v_skip.step_status;
  job_status := v_skip.job_status;
  promoted := v_skip.promoted;
  skipped := v_skip.skipped;
END
$$;
--> statement-breakpoint
-- stroem_start_child, the parent's half of starting a child task: locks the
-- parent job's live row FOR UPDATE (a cancel walking down to the job's
-- children holds it FOR KEY SHARE: a child is started before that walk or
-- refused after it), and moves the ready `task` step to `suspended` (it
-- waits for its child; its job `running`). The caller creates the child
-- job, linked to the step, in the same transaction. `result`: ok |
-- repeated (suspended already: `child_job_id` is its child) | not_found |
-- (`depth`: the parent's, the child's is one more)
-- not_task (another action type) | invalid_transition (not ready, its
-- condition undecided, or its job finished).
CREATE OR REPLACE FUNCTION stroem_start_child(p_job_id uuid, p_step_name text,
  OUT result text, OUT step_status text, OUT job_status text, OUT action_type text, OUT child_job_id uuid,
  OUT depth integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_step record;
BEGIN
  SELECT l.status, l.depth INTO job_status, depth FROM job_live l WHERE l.job_id = p_job_id FOR UPDATE;
  IF NOT FOUND THEN
    -- Finished (a job with a task step has a job_live row while unfinished), or no such job.
    SELECT j.status INTO job_status FROM job_state j WHERE j.job_id = p_job_id;
  END IF;
  SELECT s.status, s.action_type, l.route INTO v_step
  FROM job_step_state s LEFT JOIN step_live l ON l.job_id = s.job_id AND l.step_name = s.step_name
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  step_status := v_step.status;
  action_type := v_step.action_type;
  IF v_step.action_type <> 'task' THEN
    result := 'not_task';
  ELSIF v_step.status = 'suspended' THEN
    result := 'repeated';
    SELECT j.job_id INTO child_job_id FROM job j
    WHERE j.parent_job_id = p_job_id AND j.parent_step_name = p_step_name
    ORDER BY j.created_at DESC LIMIT 1;
  ELSIF v_step.status <> 'ready' OR v_step.route <> 'task' OR job_status NOT IN ('pending', 'running') THEN
    result := 'invalid_transition';
  ELSE
    UPDATE step_live s SET status = 'suspended', suspended_at = now()
    WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
    UPDATE job_live j SET status = 'running', started_at = coalesce(j.started_at, now())
    WHERE j.job_id = p_job_id AND j.status = 'pending';
    job_status := 'running';
    step_status := 'suspended';
    result := 'ok';
  END IF;
END
$$;
--> statement-breakpoint
-- A child job ended (called by the trigger that moves its job_live row to
-- job_result, in the statement that ended it; the child's lock is held):
-- its parent step, suspended waiting for it, ends with it, through
-- stroem_finish_step (unguarded: it locks the parent job, and the parent
-- advances as after any outcome). Completed, the step completes with
-- `{ childJobId, status, output }`; failed or cancelled, it fails with that
-- output and an error naming the child (no retry: it was never claimed).
-- A parent step that has ended already (its timeout, its job's cancel or
-- hand mark) is left as it is: stroem_finish_step refuses it.
CREATE OR REPLACE FUNCTION stroem_child_ended(p_parent_job_id uuid, p_parent_step text, p_child_job_id uuid,
  p_status text, p_output jsonb, p_error text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM stroem_finish_step(p_parent_job_id, p_parent_step,
    CASE WHEN p_status = 'completed' THEN 'completed' ELSE 'failed' END,
    jsonb_build_object('childJobId', p_child_job_id, 'status', p_status, 'output', p_output),
    CASE WHEN p_status = 'completed' THEN NULL
         ELSE 'child job ' || p_child_job_id || ' ' || p_status || coalesce(': ' || p_error, '') END,
    NULL, NULL, true);
END
$$;
--> statement-breakpoint
-- The unfinished children of an unfinished job, cancelled with p_reason,
-- deepest first (stroem_cancel_job and stroem_finish_job, before they lock
-- the job itself). The job is held FOR KEY SHARE meanwhile: a child's end
-- does not wait for that lock (so no cycle with the children it waits for),
-- and stroem_start_child's FOR UPDATE does (no new child meanwhile). Each
-- child gets the same treatment (its own children first), then is locked
-- and cancelled. `stroem.cascading_cancel` is on while it runs, so a
-- child's end does not end its parent's step: the parent's own end closes
-- it. Re-entrant (the setting is restored, not cleared). Returns the jobs it
-- cancelled, deepest first.
CREATE OR REPLACE FUNCTION stroem_cancel_children(p_job_id uuid, p_reason text) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
  v_child uuid;
  v_status text;
  v_done uuid[] := '{}';
  v_prev text;
BEGIN
  -- The lock before the look at its children: a child started meanwhile is
  -- seen, or waits and then finds the job finished.
  PERFORM 1 FROM job_live l WHERE l.job_id = p_job_id FOR KEY SHARE;
  IF NOT FOUND THEN
    RETURN v_done; -- finished (or of one step: no children): what is left is the timeout sweep's
  END IF;
  IF NOT EXISTS (SELECT 1 FROM job c WHERE c.parent_job_id = p_job_id) THEN
    RETURN v_done;
  END IF;
  v_prev := coalesce(current_setting('stroem.cascading_cancel', true), '');
  PERFORM set_config('stroem.cascading_cancel', 'on', true);
  FOR v_child IN
    SELECT j.job_id FROM job j
    WHERE j.parent_job_id = p_job_id AND EXISTS (SELECT 1 FROM job_live l WHERE l.job_id = j.job_id)
    ORDER BY j.job_id
  LOOP
    v_done := v_done || stroem_cancel_children(v_child, p_reason);
    SELECT l.status INTO v_status FROM stroem_lock_job(v_child) l;
    IF v_status IN ('pending', 'running') THEN
      PERFORM stroem_end_job(v_child, false, 'cancelled', NULL, p_reason, NULL);
      v_done := v_done || v_child;
    END IF;
  END LOOP;
  PERFORM set_config('stroem.cascading_cancel', v_prev, true);
  RETURN v_done;
END
$$;
--> statement-breakpoint
-- stroem_expand_loop: a ready for_each step (route '@loop') gets one
-- instance per item of p_items (a JSON array), in one statement each for
-- the definitions and the live rows: `step[i]`, with the loop step's action,
-- input, routing, retry policy and timeout, `loop_source`, `loop_index`,
-- `loop_total` and `loop_item`, ready at once (p_sequential: instance i+1
-- depends on instance i, so it runs once i is done, and is skipped after
-- a failure unless the loop continues on failure). Every instance lists
-- the loop step among its dependants, and the loop step waits, pending on
-- route '@instances', for all of them (its counts), so each instance's
-- report updates it like any dependant, whatever the loop's size; the last
-- one finishes it (trigger step_live_loop_collected). An empty list
-- completes it at once with `[]`. `result`: ok | repeated (expanded
-- already: `instances` is its size) | not_found | not_loop (no `for_each`)
-- | invalid_transition (not ready, its condition undecided, or finished).
CREATE OR REPLACE FUNCTION stroem_expand_loop(p_job_id uuid, p_step_name text, p_items jsonb, p_sequential boolean,
  OUT result text, OUT step_status text, OUT job_status text, OUT instances integer,
  OUT promoted text[], OUT skipped text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_step record;
  v_n integer := jsonb_array_length(p_items);
  v_route text;
  v_finish record;
BEGIN
  promoted := '{}';
  skipped := '{}';
  -- A job with a for_each step always has a job_live row (its creation,
  -- createSteps and the copies of lineage give it one): the counts below.
  SELECT l.status INTO job_status FROM stroem_lock_job(p_job_id) l;
  IF job_status IS NULL THEN
    result := 'not_found';
    RETURN;
  END IF;
  SELECT s.status, s.route, d.for_each, d.loop_total,
         stroem_route(coalesce(d.required_ability, d.action_type), d.required_tags) AS instance_route
  INTO v_step
  FROM job_step d LEFT JOIN step_live s ON s.job_id = d.job_id AND s.step_name = d.step_name
  WHERE d.job_id = p_job_id AND d.step_name = p_step_name;
  IF NOT FOUND THEN
    result := 'not_found';
    RETURN;
  END IF;
  SELECT s.status INTO step_status FROM job_step_state s WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  IF v_step.for_each IS NULL THEN
    result := 'not_loop';
    RETURN;
  END IF;
  IF v_step.loop_total IS NOT NULL THEN
    result := 'repeated';
    instances := v_step.loop_total;
    RETURN;
  END IF;
  IF v_step.status IS DISTINCT FROM 'ready' OR v_step.route <> '@loop' THEN
    result := 'invalid_transition';
    RETURN;
  END IF;
  instances := v_n;
  UPDATE job_step d SET loop_total = v_n WHERE d.job_id = p_job_id AND d.step_name = p_step_name;
  IF v_n = 0 THEN
    SELECT * INTO v_finish FROM stroem_finish_step(p_job_id, p_step_name, 'completed', '[]'::jsonb, NULL, NULL, NULL, true);
    result := v_finish.result;
    step_status := v_finish.step_status;
    job_status := v_finish.job_status;
    promoted := v_finish.promoted;
    skipped := v_finish.skipped;
    RETURN;
  END IF;
  WITH defs AS (
    INSERT INTO job_step (job_id, step_name, action_name, action_type, required_ability, required_tags, action_image,
      action_spec, input, depends_on, continue_on_failure, dependants, max_retries, retry_backoff_secs,
      retry_strategy, retry_jitter, timeout_secs, loop_source, loop_index, loop_total, loop_item)
    SELECT d.job_id, d.step_name || '[' || (i.ord - 1) || ']', d.action_name, d.action_type, d.required_ability,
      d.required_tags, d.action_image, d.action_spec, d.input,
      CASE WHEN p_sequential AND i.ord > 1 THEN ARRAY[d.step_name || '[' || (i.ord - 2) || ']'] ELSE '{}'::text[] END,
      d.continue_on_failure,
      CASE WHEN p_sequential AND i.ord < v_n THEN ARRAY[d.step_name, d.step_name || '[' || i.ord || ']']
           ELSE ARRAY[d.step_name] END,
      d.max_retries, d.retry_backoff_secs, d.retry_strategy, d.retry_jitter, d.timeout_secs,
      d.step_name, (i.ord - 1)::integer, v_n, i.item
    FROM job_step d CROSS JOIN jsonb_array_elements(p_items) WITH ORDINALITY AS i(item, ord)
    WHERE d.job_id = p_job_id AND d.step_name = p_step_name
    RETURNING job_id, step_name, action_type, depends_on, continue_on_failure, dependants, max_retries, timeout_secs
  )
  INSERT INTO step_live (job_id, step_name, action_type, route, status, ready_at, max_retries, deps_total,
    continue_on_failure, dependants, timeout_secs, deps_unfinished)
  SELECT d.job_id, d.step_name, d.action_type, v_step.instance_route,
    CASE WHEN cardinality(d.depends_on) = 0 THEN 'ready' ELSE 'pending' END,
    CASE WHEN cardinality(d.depends_on) = 0 THEN now() END,
    d.max_retries, cardinality(d.depends_on), d.continue_on_failure, d.dependants, d.timeout_secs,
    cardinality(d.depends_on)
  FROM defs d;
  -- The loop step waits for its instances (they list it as a dependant).
  UPDATE step_live s SET status = 'pending', route = '@instances', deps_total = v_n, deps_unfinished = v_n,
    deps_failed = 0, deps_completed = 0
  WHERE s.job_id = p_job_id AND s.step_name = p_step_name;
  UPDATE job_live j SET steps_unfinished = j.steps_unfinished + v_n, status = 'running',
    started_at = coalesce(j.started_at, now())
  WHERE j.job_id = p_job_id;
  PERFORM pg_notify(stroem_ready_channel(), stroem_route_ability(v_step.instance_route));
  job_status := 'running';
  step_status := 'pending';
  result := 'ok';
END
$$;
