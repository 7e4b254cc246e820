-- The PostgreSQL worker lane's statements (queue/pg/lane_loop.py).
--
-- settler_claim: move up to p_n waiting jobs to active in (priority, seq) order, each
-- locked with "<p_token>:<attempt>" (a token no earlier claim of the job had). Due
-- delayed jobs are promoted first; a paused lane claims nothing. With tier caps
-- (p_caps: {"tier": cap}), a tenant at its cap is skipped while other work waits
-- (work-conserving: when only capped work is left, it runs), serialised per lane.
CREATE OR REPLACE FUNCTION settler_claim(
  p_queue   text,
  p_token   text,
  p_lock_ms bigint,
  p_now     bigint,
  p_name    text,
  p_n       integer,
  p_caps    jsonb
) RETURNS SETOF job
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
  v_ids     text[] := '{}';
  v_skipped text[] := '{}';
  v_active  jsonb;
  v_hits    jsonb := '{}';
  v_scan    integer;
  v_seen    integer := 0;
  v_cap     integer;
  v_n       integer;
  r         record;
BEGIN
  IF p_n <= 0 THEN
    RETURN;
  END IF;
  UPDATE job SET state = 'waiting', delay_ms = 0
   WHERE queue = p_queue AND state = 'delayed' AND process_at_ms <= p_now;
  IF EXISTS (SELECT 1 FROM meta WHERE queue = p_queue AND field = 'paused' AND value = '1') THEN
    RETURN;
  END IF;

  IF p_caps IS NULL OR p_caps = '{}'::jsonb THEN
    RETURN QUERY
    WITH c AS (
      SELECT id FROM job
       WHERE queue = p_queue AND state = 'waiting'
       ORDER BY priority, seq
       LIMIT p_n
       FOR UPDATE SKIP LOCKED
    )
    UPDATE job j
       SET state = 'active',
           lock_token = p_token || ':' || (j.attempts_started + 1),
           locked_until_ms = p_now + p_lock_ms,
           processed_at_ms = p_now,
           processed_by = p_name,
           attempts_started = j.attempts_started + 1
      FROM c
     WHERE j.queue = p_queue AND j.id = c.id
    RETURNING j.*;
    RETURN;
  END IF;

  PERFORM pg_advisory_xact_lock(hashtext('settler:caps:' || p_queue));
  SELECT COALESCE(jsonb_object_agg(t, n), '{}'::jsonb) INTO v_active
    FROM (SELECT data->>'tenantId' AS t, count(*) AS n
            FROM job WHERE queue = p_queue AND state = 'active'
           GROUP BY 1) a
   WHERE t IS NOT NULL;
  v_scan := p_n * 4 + 64;
  FOR r IN
    SELECT id, data->>'tenantId' AS t, data->>'tenantTier' AS tier
      FROM job
     WHERE queue = p_queue AND state = 'waiting'
     ORDER BY priority, seq
     LIMIT v_scan
     FOR UPDATE SKIP LOCKED
  LOOP
    v_seen := v_seen + 1;
    v_cap := COALESCE((p_caps->>r.tier)::integer, 0);
    v_n := COALESCE((v_active->>r.t)::integer, 0);
    IF r.t IS NULL OR v_cap <= 0 OR v_n < v_cap THEN
      v_ids := v_ids || r.id;
      IF r.t IS NOT NULL THEN
        v_active := v_active || jsonb_build_object(r.t, v_n + 1);
      END IF;
      EXIT WHEN cardinality(v_ids) >= p_n;
    ELSE
      v_skipped := v_skipped || r.id;
      IF NOT v_hits ? r.t THEN
        v_hits := v_hits || jsonb_build_object(r.t, r.tier);
      END IF;
    END IF;
  END LOOP;
  -- Work-conserving: every waiting job was seen and slots are left, so capped work runs.
  IF v_seen < v_scan AND cardinality(v_ids) < p_n THEN
    v_ids := v_ids || v_skipped[1:p_n - cardinality(v_ids)];
  END IF;
  IF v_hits <> '{}'::jsonb THEN
    INSERT INTO settler_fair_counter (queue, key, n)
    SELECT p_queue, k, count(*) FROM (
      SELECT value AS k FROM jsonb_each_text(v_hits)
      UNION ALL
      SELECT 't:' || key FROM jsonb_each_text(v_hits)
    ) h GROUP BY k
    ON CONFLICT (queue, key) DO UPDATE SET n = settler_fair_counter.n + EXCLUDED.n;
  END IF;
  RETURN QUERY
  UPDATE job j
     SET state = 'active',
         lock_token = p_token || ':' || (j.attempts_started + 1),
         locked_until_ms = p_now + p_lock_ms,
         processed_at_ms = p_now,
         processed_by = p_name,
         attempts_started = j.attempts_started + 1
   WHERE j.queue = p_queue AND j.id = ANY(v_ids)
  RETURNING j.*;
END;
$$;

-- settler_lane_step: complete a batch of jobs (ids, their lock tokens, results as a
-- JSON array) and claim up to p_n next ones, in one statement. A job no longer
-- active under that token was finished elsewhere and is left alone. Jobs of flows
-- or deduplication go through bullmq's own move_to_completed. With p_trim the
-- lane's completed jobs are trimmed to p_keep_age seconds and p_keep_count jobs.
CREATE OR REPLACE FUNCTION settler_lane_step(
  p_queue      text,
  p_ids        text[],
  p_tokens     text[],
  p_results    jsonb,
  p_now        bigint,
  p_trim       boolean,
  p_keep_age   bigint,
  p_keep_count integer,
  p_token      text,
  p_lock_ms    bigint,
  p_name       text,
  p_n          integer,
  p_caps       jsonb
) RETURNS SETOF job
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
  r      record;
  v_cut  bigint;
BEGIN
  IF cardinality(p_ids) > 0 THEN
    FOR r IN
      WITH d AS (
        SELECT * FROM unnest(p_ids, p_tokens) WITH ORDINALITY AS d(id, tok, ord)
      ),
      plain AS (
        UPDATE job j
           SET state = 'completed',
               return_value = p_results->((d.ord - 1)::integer),
               finished_at_ms = p_now,
               lock_token = NULL,
               locked_until_ms = NULL,
               attempts_made = j.attempts_made + 1
          FROM d
         WHERE j.queue = p_queue AND j.id = d.id AND j.state = 'active'
           AND j.lock_token = d.tok
           AND j.parent_id IS NULL AND j.dedup_id IS NULL
        RETURNING j.id, (j.opts->'removeOnComplete') = 'true'::jsonb AS drop_it
      )
      SELECT id, drop_it, NULL::text AS tok, NULL::bigint AS ord FROM plain
      UNION ALL
      SELECT d.id, false, d.tok, d.ord FROM d
        JOIN job j ON j.queue = p_queue AND j.id = d.id
       WHERE j.state = 'active' AND j.lock_token = d.tok
         AND (j.parent_id IS NOT NULL OR j.dedup_id IS NOT NULL)
    LOOP
      IF r.tok IS NOT NULL THEN
        PERFORM move_to_completed(p_queue, r.id, r.tok, p_results->((r.ord - 1)::integer),
          p_now, false, p_keep_age, NULL);
      ELSIF r.drop_it THEN
        DELETE FROM job WHERE queue = p_queue AND id = r.id;
      END IF;
    END LOOP;
  END IF;

  IF p_trim THEN
    IF p_keep_age IS NOT NULL AND p_keep_age >= 0 THEN
      DELETE FROM job
       WHERE queue = p_queue AND state = 'completed'
         AND finished_at_ms <= p_now - p_keep_age * 1000;
    END IF;
    IF p_keep_count IS NOT NULL AND p_keep_count >= 0 THEN
      SELECT finished_at_ms INTO v_cut FROM job
       WHERE queue = p_queue AND state = 'completed'
       ORDER BY finished_at_ms DESC
       OFFSET p_keep_count LIMIT 1;
      IF v_cut IS NOT NULL THEN
        DELETE FROM job
         WHERE queue = p_queue AND state = 'completed' AND finished_at_ms <= v_cut;
      END IF;
    END IF;
  END IF;

  IF p_n > 0 THEN
    RETURN QUERY SELECT * FROM settler_claim(
      p_queue, p_token, p_lock_ms, p_now, p_name, p_n, p_caps);
  END IF;
END;
$$;

-- settler_fail: one failed attempt. p_delay NULL fails the job for good (bullmq's
-- move_to_failed, with retention), 0 puts it back to wait (retry_job), more delays
-- it (move_to_delayed). The job's first failure time is kept in its opts
-- ("settlerFirstFailedOn"); returned, or -code when the job was not ours any more.
CREATE OR REPLACE FUNCTION settler_fail(
  p_queue      text,
  p_id         text,
  p_token      text,
  p_reason     text,
  p_stacktrace jsonb,
  p_now        bigint,
  p_delay      bigint,
  p_remove_all boolean,
  p_keep_age   bigint,
  p_keep_count integer
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
  v_first bigint;
BEGIN
  UPDATE job
     SET opts = CASE WHEN opts ? 'settlerFirstFailedOn' THEN opts
                     ELSE opts || jsonb_build_object('settlerFirstFailedOn', p_now) END
   WHERE queue = p_queue AND id = p_id AND state = 'active' AND lock_token = p_token
  RETURNING (opts->>'settlerFirstFailedOn')::bigint INTO v_first;
  IF v_first IS NULL THEN
    RETURN -CASE WHEN EXISTS (SELECT 1 FROM job WHERE queue = p_queue AND id = p_id)
                 THEN 6 ELSE 1 END;
  END IF;
  IF p_delay IS NULL THEN
    PERFORM move_to_failed(p_queue, p_id, p_token, p_reason, p_stacktrace, p_now,
      p_remove_all, p_keep_age, p_keep_count);
  ELSIF p_delay = 0 THEN
    PERFORM retry_job(p_queue, p_id, p_token, false, p_reason, p_stacktrace);
  ELSE
    PERFORM move_to_delayed(p_queue, p_id, p_token, p_now + p_delay, p_delay, false,
      p_reason, p_stacktrace);
  END IF;
  RETURN v_first;
END;
$$;

-- settler_extend_locks: renew the locks of the jobs a lane holds; the ids it lost.
CREATE OR REPLACE FUNCTION settler_extend_locks(
  p_queue   text,
  p_ids     text[],
  p_tokens  text[],
  p_lock_ms bigint,
  p_now     bigint
) RETURNS SETOF text
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
  WITH d AS (SELECT * FROM unnest(p_ids, p_tokens) AS d(id, tok)),
  renewed AS (
    UPDATE job j SET locked_until_ms = p_now + p_lock_ms
      FROM d
     WHERE j.queue = p_queue AND j.id = d.id AND j.state = 'active' AND j.lock_token = d.tok
    RETURNING j.id
  )
  SELECT d.id FROM d WHERE d.id NOT IN (SELECT id FROM renewed);
$$;
