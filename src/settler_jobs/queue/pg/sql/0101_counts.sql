-- Lane counts for dashboards, metrics and alerts. Counting scans the job rows, which
-- every worker process does every few seconds; once a schema holds many jobs, one caller
-- at a time recounts and the others read what it found, at most p_max_age_ms old.
CREATE TABLE IF NOT EXISTS settler_count_cache (
  only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  computed_at_ms bigint  NOT NULL,
  total          bigint  NOT NULL,
  counts         jsonb   NOT NULL
);

CREATE OR REPLACE FUNCTION settler_counts(p_now_ms bigint, p_big bigint, p_max_age_ms bigint)
RETURNS TABLE (lane text, lane_state text, jobs bigint, oldest_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
  cached settler_count_cache%ROWTYPE;
  had_cache boolean;
  fresh jsonb;
  fresh_total bigint;
BEGIN
  SELECT * INTO cached FROM settler_count_cache c WHERE c.only_row;
  had_cache := FOUND;
  -- 0x53434E54 = "SCNT": one recount per schema at a time.
  IF had_cache AND cached.total >= p_big AND (
       p_now_ms - cached.computed_at_ms < p_max_age_ms
       OR NOT pg_try_advisory_xact_lock(1396919892, hashtext(current_schema()))) THEN
    fresh := cached.counts;
  ELSE
    SELECT coalesce(jsonb_agg(jsonb_build_array(g.q, g.s, g.n, g.o)), '[]'::jsonb),
           coalesce(sum(g.n), 0)
      INTO fresh, fresh_total
      FROM (SELECT j.queue AS q, j.state::text AS s, count(*) AS n,
                   min(j.added_at_ms) FILTER (WHERE j.state = 'waiting') AS o
              FROM job j GROUP BY 1, 2) g;
    IF fresh_total >= p_big THEN
      INSERT INTO settler_count_cache AS c (only_row, computed_at_ms, total, counts)
      VALUES (true, p_now_ms, fresh_total, fresh)
      ON CONFLICT (only_row) DO UPDATE
        SET computed_at_ms = EXCLUDED.computed_at_ms, total = EXCLUDED.total,
            counts = EXCLUDED.counts;
    ELSIF had_cache THEN
      DELETE FROM settler_count_cache c WHERE c.only_row;
    END IF;
  END IF;
  RETURN QUERY
    SELECT e->>0, e->>1, (e->>2)::bigint, (e->>3)::bigint FROM jsonb_array_elements(fresh) e;
END
$$;
