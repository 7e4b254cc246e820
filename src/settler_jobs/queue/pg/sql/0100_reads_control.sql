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

-- The fair-share state the engine's files (0001-0099) create and the submit and claim
-- paths write; repeated here, IF NOT EXISTS with the same definitions, so reads and
-- control stand on their own. Usage and cancel refunds read and write them.
CREATE TABLE IF NOT EXISTS settler_fair_lane (
  queue   text PRIMARY KEY,
  v       bigint NOT NULL DEFAULT 0,
  fmaxw   bigint NOT NULL DEFAULT 0,
  rebases integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS settler_fair_flow (
  queue  text NOT NULL,
  tenant text NOT NULL,
  class  text NOT NULL,
  f      bigint NOT NULL,
  w      bigint NOT NULL,
  PRIMARY KEY (queue, tenant, class)
);
CREATE TABLE IF NOT EXISTS settler_fair_counter (
  queue text NOT NULL,
  key   text NOT NULL,
  n     bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (queue, key)
);
