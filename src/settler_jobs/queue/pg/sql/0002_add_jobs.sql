-- settler_add_jobs: Settler's submit on PostgreSQL, the analogue of lua/add.lua.
--
-- One statement: with fair share on, lock the lanes' clocks, check the backlog quotas
-- of the call (a refusal adds nothing), tag each job max(F_flow, V) + step (clamped to
-- V + horizon and bullmq's largest priority) and insert every job with that tag as
-- its bullmq priority (column and opts), so Node workers also pop in fair order.
-- With fair share off the given priority is used. Existing (queue, id) pairs are
-- left alone. One NOTIFY bullmq_jobs per lane that got a job.
--
-- p_jobs: [{q, id, name, data, opts, t (tenant), c (class), step, delay, ts, att, prio}]
-- p_quotas: [[tenant, quota, adding], ...] (only tenants with a quota)
-- Returns {"p": [priority per job, in order], "added": [ids inserted]} or
-- {"refused": [tenant, backlog, quota]}.
CREATE OR REPLACE FUNCTION settler_lane_clock(p_queue text, p_rebase_at bigint)
RETURNS bigint[]  -- {v, count}
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
  v_lane  settler_fair_lane;
  vv      bigint;
  v_count bigint;
  h_prio  integer;
  h_step  bigint;
BEGIN
  SELECT * INTO v_lane FROM settler_fair_lane WHERE queue = p_queue;
  vv := v_lane.v;
  v_count := vv;
  SELECT j.priority, COALESCE(fl.w, 1) INTO h_prio, h_step
    FROM job j
    LEFT JOIN settler_fair_flow fl
      ON fl.queue = p_queue
     AND fl.tenant = j.data->>'tenantId'
     AND fl.class = j.data->>'priorityClass'
   WHERE j.queue = p_queue AND j.state = 'waiting' AND j.priority > 0
   ORDER BY j.priority, j.seq
   LIMIT 1;
  IF h_prio IS NOT NULL THEN
    vv := GREATEST(vv, h_prio - h_step);
    v_count := GREATEST(v_count, h_prio - 1);
  ELSE
    vv := GREATEST(vv, v_lane.fmaxw);
    v_count := vv;
  END IF;
  IF vv > p_rebase_at THEN
    -- Subtract v from every tag of the lane: flows, clock, and the jobs that carry one.
    UPDATE settler_fair_flow SET f = GREATEST(f - vv, 0) WHERE queue = p_queue;
    UPDATE job SET priority = GREATEST(priority - vv, 1)
     WHERE queue = p_queue AND priority > 0
       AND state IN ('waiting', 'delayed', 'active');
    UPDATE settler_fair_lane
       SET fmaxw = GREATEST(fmaxw - vv, 0), rebases = rebases + 1
     WHERE queue = p_queue;
    v_count := v_count - vv;
    vv := 0;
  END IF;
  IF vv <> v_lane.v THEN
    UPDATE settler_fair_lane SET v = vv WHERE queue = p_queue;
  END IF;
  RETURN ARRAY[vv, v_count];
END;
$$;

CREATE OR REPLACE FUNCTION settler_add_jobs(
  p_lanes     text[],
  p_fair      boolean,
  p_rebase_at bigint,
  p_horizon   bigint,
  p_quotas    jsonb,
  p_jobs      jsonb
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
  v_clocks  bigint[] := '{}';
  v_counts  bigint[] := '{}';
  v_clock   bigint[];
  v_lane    text;
  v_quota   jsonb;
  v_backlog bigint;
  v_prios   jsonb;
  v_added   jsonb;
BEGIN
  IF p_fair THEN
    INSERT INTO settler_fair_lane (queue)
      SELECT unnest(p_lanes) ON CONFLICT (queue) DO NOTHING;
    PERFORM 1 FROM settler_fair_lane WHERE queue = ANY(p_lanes) ORDER BY queue FOR UPDATE;
    FOREACH v_lane IN ARRAY p_lanes LOOP
      v_clock := settler_lane_clock(v_lane, p_rebase_at);
      v_clocks := v_clocks || v_clock[1];
      v_counts := v_counts || v_clock[2];
    END LOOP;

    FOR v_quota IN SELECT value FROM jsonb_array_elements(COALESCE(p_quotas, '[]'::jsonb)) LOOP
      SELECT COALESCE(SUM(CEIL((fl.f - c.n)::numeric / fl.w)), 0) INTO v_backlog
        FROM settler_fair_flow fl
        JOIN unnest(p_lanes, v_counts) AS c(queue, n) ON c.queue = fl.queue
       WHERE fl.tenant = v_quota->>0 AND fl.w > 0 AND fl.f > c.n;
      IF (v_quota->>1)::bigint > 0
         AND v_backlog + (v_quota->>2)::bigint > (v_quota->>1)::bigint THEN
        RETURN jsonb_build_object('refused', jsonb_build_array(
          v_quota->0, v_backlog, (v_quota->>1)::bigint));
      END IF;
    END LOOP;
  END IF;

  WITH j AS (
    SELECT x.ord, x.e, x.e->>'q' AS q, x.e->>'t' AS t, x.e->>'c' AS c,
           (x.e->>'step')::bigint AS step, (x.e->>'delay')::bigint AS delay
      FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS x(e, ord)
  ),
  cl AS (SELECT * FROM unnest(p_lanes, v_clocks) AS c(q, v)),
  tagged AS (
    SELECT j.*, cl.v,
           GREATEST(COALESCE(fl.f, 0), cl.v)
             + SUM(j.step) OVER (PARTITION BY j.q, j.t, j.c ORDER BY j.ord) AS f
      FROM j
      LEFT JOIN cl ON cl.q = j.q
      LEFT JOIN settler_fair_flow fl ON fl.queue = j.q AND fl.tenant = j.t AND fl.class = j.c
  ),
  prio AS (
    SELECT tagged.*,
           CASE WHEN p_fair
                THEN GREATEST(LEAST(f, v + p_horizon, 2097151), 1)
                ELSE (e->>'prio')::bigint END::integer AS p
      FROM tagged
  ),
  flows AS (
    INSERT INTO settler_fair_flow (queue, tenant, class, f, w)
    SELECT q, t, c, MAX(f), (array_agg(step ORDER BY ord DESC))[1]
      FROM prio WHERE p_fair GROUP BY q, t, c
    ON CONFLICT (queue, tenant, class) DO UPDATE SET f = EXCLUDED.f, w = EXCLUDED.w
    RETURNING 1
  ),
  fmax AS (
    UPDATE settler_fair_lane l SET fmaxw = GREATEST(l.fmaxw, m.f)
      FROM (SELECT q, MAX(f) AS f FROM prio WHERE p_fair AND delay = 0 GROUP BY q) m
     WHERE l.queue = m.q
    RETURNING 1
  ),
  reserved AS (SELECT nextval('job_seq') AS s FROM prio),
  rr AS (SELECT s, row_number() OVER (ORDER BY s) AS rn FROM reserved),
  rows AS (
    SELECT prio.*, rr.s FROM prio JOIN rr ON rr.rn = prio.ord
  ),
  ins AS (
    INSERT INTO job (
      queue, id, seq, name, state, data, opts, priority, delay_ms, max_attempts,
      added_at_ms, process_at_ms
    )
    SELECT q, e->>'id', s, e->>'name',
           CASE WHEN delay > 0 THEN 'delayed'::job_state ELSE 'waiting'::job_state END,
           e->'data', jsonb_set(e->'opts', '{priority}', to_jsonb(p)), p, delay,
           (e->>'att')::integer, (e->>'ts')::bigint,
           CASE WHEN delay > 0 THEN (e->>'ts')::bigint + delay END
      FROM rows ORDER BY ord
    ON CONFLICT (queue, id) DO NOTHING
    RETURNING queue, id
  ),
  notified AS (
    SELECT pg_notify('bullmq_jobs', queue) FROM (SELECT DISTINCT queue FROM ins) d
  )
  SELECT (SELECT jsonb_agg(p ORDER BY ord) FROM prio),
         (SELECT COALESCE(jsonb_agg(id), '[]'::jsonb) FROM ins),
         (SELECT count(*) FROM flows) + (SELECT count(*) FROM fmax)
           + (SELECT count(*) FROM notified)
    INTO v_prios, v_added, v_backlog;
  RETURN jsonb_build_object('p', v_prios, 'added', v_added);
END;
$$;
