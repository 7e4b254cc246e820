--[[
  Settler fair share: check backlog quotas and tag a batch of jobs with BullMQ priorities
  from per-flow virtual finish times, atomically (see queue/fair.py for the model).

  KEYS[2i-1], KEYS[2i]  lane i: its fair-state hash ("<queue>:sf:fair") and its
                        BullMQ prioritized set ("<queue>:prioritized")
  ARGV[1] rebase threshold   ARGV[2] horizon   ARGV[3] number of quota checks Q
  then Q x (tenant, quota, jobs it adds)
  then per job: lane index, tenant, class, step, delayed (1/0)
  Returns {"OK", p1, p2, ...} or {"REFUSED", tenant, backlog, quota}.
]]
local rcall = redis.call
local SCALE = 4294967296
local MAXP = 2097151
local CLASSES = {"LOW", "NORMAL", "HIGH", "CRITICAL"}
local rebaseAt = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])

local function baseOf(i)
  local prio = KEYS[2 * i]
  return string.sub(prio, 1, #prio - 11) -- strip "prioritized"
end

local function shifted(p, delta)
  local q = p - delta
  if q < 1 then q = 1 end
  return q
end

-- Subtract delta from every tag of lane i: flows, clock, waiting, parked, delayed and
-- active jobs (their hash `priority` is reread on retry and promotion).
local function rebase(i, delta)
  local fairKey, prioKey = KEYS[2 * i - 1], KEYS[2 * i]
  local base = baseOf(i)
  local state = rcall("HGETALL", fairKey)
  for k = 1, #state, 2 do
    local field, value = state[k], tonumber(state[k + 1])
    if field == "v" or field == "fmaxw" or string.sub(field, 1, 2) == "f:" then
      local nv = value - delta
      if nv < 0 then nv = 0 end
      rcall("HSET", fairKey, field, nv)
    end
  end
  local function rezset(key)
    local members = rcall("ZRANGE", key, 0, -1, "WITHSCORES")
    for k = 1, #members, 2 do
      local id, score = members[k], tonumber(members[k + 1])
      local p = math.floor(score / SCALE)
      local q = shifted(p, delta)
      rcall("ZADD", key, q * SCALE + (score % SCALE), id)
      rcall("HSET", base .. id, "priority", q)
    end
  end
  rezset(prioKey)
  for _, tenant in ipairs(rcall("ZRANGE", base .. "sf:parked", 0, -1)) do
    rezset(base .. "sf:park:" .. tenant)
    local head = rcall("ZRANGE", base .. "sf:park:" .. tenant, 0, 0, "WITHSCORES")
    if head[2] then rcall("ZADD", base .. "sf:parked", head[2], tenant) end
  end
  local function rehash(ids)
    for _, id in ipairs(ids) do
      local p = tonumber(rcall("HGET", base .. id, "priority"))
      if p and p > 0 then rcall("HSET", base .. id, "priority", shifted(p, delta)) end
    end
  end
  rehash(rcall("ZRANGE", base .. "delayed", 0, -1))
  rehash(rcall("LRANGE", base .. "active", 0, -1))
  rcall("HINCRBY", fairKey, "rebases", 1)
end

local clocks = {}
local counts = {}
-- The lane's virtual time (never going back): the start tag of its waiting head (the
-- head's level minus its flow's step), and an empty lane jumps to the latest tag handed
-- to an immediate job (delayed ones still count), so idle flows cannot bank credit.
-- Backlogs count from just below the head's level.
local function clockOf(i)
  if clocks[i] then return clocks[i] end
  local fairKey, prioKey = KEYS[2 * i - 1], KEYS[2 * i]
  local stored = rcall("HMGET", fairKey, "v", "fmaxw")
  local v = tonumber(stored[1]) or 0
  local count = v
  local head = rcall("ZRANGE", prioKey, 0, 0, "WITHSCORES")
  if head[2] then
    local level = math.floor(tonumber(head[2]) / SCALE)
    local step = 1
    local data = rcall("HGET", baseOf(i) .. head[1], "data")
    if data then
      local tenant = string.match(data, '^{"tenantId":"([^"]+)"')
      local class = string.match(data, ',"priorityClass":"(%u+)"')
      if tenant and class then
        step = tonumber(rcall("HGET", fairKey, "w:" .. tenant .. ":" .. class)) or 1
      end
    end
    if level - step > v then v = level - step end
    if level - 1 > count then count = level - 1 end
  else
    local fmax = tonumber(stored[2]) or 0
    if fmax > v then v = fmax end
    count = v
  end
  if v > rebaseAt then
    rebase(i, v)
    count = count - v
    v = 0
  end
  rcall("HSET", fairKey, "v", v)
  clocks[i] = v
  counts[i] = count
  return v
end

local function countClockOf(i)
  clockOf(i)
  return counts[i]
end

local nLanes = #KEYS / 2
local checks = tonumber(ARGV[3])
local pos = 4
-- Quotas first, for every tenant of the call, before any tag is written.
for _ = 1, checks do
  local tenant, quota, adding = ARGV[pos], tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  pos = pos + 3
  local backlog = 0
  for i = 1, nLanes do
    local fields = {}
    for _, c in ipairs(CLASSES) do
      fields[#fields + 1] = "f:" .. tenant .. ":" .. c
      fields[#fields + 1] = "w:" .. tenant .. ":" .. c
    end
    local flows = rcall("HMGET", KEYS[2 * i - 1], unpack(fields))
    for k = 1, #flows, 2 do
      local f, w = tonumber(flows[k]), tonumber(flows[k + 1])
      if f and w and w > 0 then
        local ahead = f - countClockOf(i)
        if ahead > 0 then backlog = backlog + math.ceil(ahead / w) end
      end
    end
    backlog = backlog + rcall("ZCARD", baseOf(i) .. "sf:park:" .. tenant)
  end
  if quota > 0 and backlog + adding > quota then
    return {"REFUSED", tenant, backlog, quota}
  end
end

local out = {"OK"}
local flows = {}
local order = {}
local fmax = {}
while pos <= #ARGV do
  local i, tenant, class, step = tonumber(ARGV[pos]), ARGV[pos + 1], ARGV[pos + 2],
    tonumber(ARGV[pos + 3])
  local delayed = ARGV[pos + 4] == "1"
  pos = pos + 5
  local v = clockOf(i)
  local field = "f:" .. tenant .. ":" .. class
  local fk = i .. "|" .. field
  local flow = flows[fk]
  if flow == nil then
    local f = tonumber(rcall("HGET", KEYS[2 * i - 1], field)) or 0
    flow = {i, field, f, "w:" .. tenant .. ":" .. class, step}
    flows[fk] = flow
    order[#order + 1] = flow
  end
  local f = flow[3]
  if f < v then f = v end
  f = f + step
  flow[3] = f
  flow[5] = step
  if not delayed and (fmax[i] or 0) < f then fmax[i] = f end
  local p = f
  if p > v + horizon then p = v + horizon end
  if p > MAXP then p = MAXP end
  if p < 1 then p = 1 end
  out[#out + 1] = p
end
for _, flow in ipairs(order) do
  rcall("HSET", KEYS[2 * flow[1] - 1], flow[2], flow[3], flow[4], flow[5])
end
for i, f in pairs(fmax) do
  local stored = tonumber(rcall("HGET", KEYS[2 * i - 1], "fmaxw")) or 0
  if f > stored then rcall("HSET", KEYS[2 * i - 1], "fmaxw", f) end
end
return out
