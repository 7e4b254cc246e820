-- Settler fair share on PostgreSQL: the state behind queue/fair.py's semantics.
-- A lane's virtual clock and latest immediate tag (Redis: "<queue>:sf:fair" v, fmaxw).
CREATE TABLE IF NOT EXISTS settler_fair_lane (
  queue   text PRIMARY KEY,
  v       bigint NOT NULL DEFAULT 0,
  fmaxw   bigint NOT NULL DEFAULT 0,
  rebases integer NOT NULL DEFAULT 0
);

-- A flow (tenant, class) within a lane: its finish tag and its step (Redis f:, w:).
CREATE TABLE IF NOT EXISTS settler_fair_flow (
  queue  text NOT NULL,
  tenant text NOT NULL,
  class  text NOT NULL,
  f      bigint NOT NULL,
  w      bigint NOT NULL,
  PRIMARY KEY (queue, tenant, class)
);

-- Counters: cap hits per tier and "t:<tenant>" (queue = the lane), and refused
-- submissions per tier (queue = 'settler:quota-refusals').
CREATE TABLE IF NOT EXISTS settler_fair_counter (
  queue text NOT NULL,
  key   text NOT NULL,
  n     bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (queue, key)
);

