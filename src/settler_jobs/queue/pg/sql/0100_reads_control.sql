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

-- Unfinished jobs by tenant: isolation filters, backlogs and usage.
CREATE INDEX IF NOT EXISTS settler_job_tenant_idx
  ON job (queue, (data->>'tenantId'), state)
  WHERE state IN ('waiting', 'delayed', 'active');
