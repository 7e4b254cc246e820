-- Settler's queue-side state for reads and control (PostgreSQL backend).

-- How far each lane's failed jobs were copied to the dead-letter queue (ms).
CREATE TABLE IF NOT EXISTS settler_dlq_cursor (
  queue        text   PRIMARY KEY,
  failed_at_ms bigint NOT NULL
);

-- When each job scheduler was last registered or changed (ms), per lane.
CREATE TABLE IF NOT EXISTS settler_schedule (
  queue            text   NOT NULL,
  schedule_id      text   NOT NULL,
  registered_at_ms bigint NOT NULL,
  PRIMARY KEY (queue, schedule_id)
);

-- The time a job first failed an attempt (the Redis side keeps it on the job hash);
-- goes with the job.
CREATE TABLE IF NOT EXISTS settler_first_failed (
  queue        text   NOT NULL,
  job_id       text   NOT NULL,
  failed_at_ms bigint NOT NULL,
  PRIMARY KEY (queue, job_id),
  FOREIGN KEY (queue, job_id) REFERENCES job (queue, id) ON DELETE CASCADE
);

-- Fair-share counters read by usage figures: cap hits per lane and field
-- ('t:<tenant>' or a tier name), quota refusals per tier (queue = '').
CREATE TABLE IF NOT EXISTS settler_fair_counter (
  queue text   NOT NULL,
  kind  text   NOT NULL CHECK (kind IN ('cap_hit', 'refusal')),
  field text   NOT NULL,
  n     bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (queue, kind, field)
);

-- Failed jobs by failure time, for the DLQ copy (bullmq's finished index leads
-- with state, so it serves this too) and unfinished jobs by tenant for isolation
-- filters, backlogs and usage.
CREATE INDEX IF NOT EXISTS settler_job_tenant_idx
  ON job (queue, (data->>'tenantId'), state)
  WHERE state IN ('waiting', 'delayed', 'active');
