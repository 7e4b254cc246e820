--[[
  Settler fair share, shared part of reserve.lua and add.lua (queue/fair.py joins them):
  the lane clocks, the rebase, backlog quotas and tagging (see queue/fair.py).

  KEYS[2i-1], KEYS[2i]  lane i (1..ARGV[3]): its fair-state hash ("<queue>:sf:fair")
                        and its BullMQ prioritized set ("<queue>:prioritized")
  ARGV[1] rebase threshold   ARGV[2] horizon   ARGV[3] number of lanes
]]
local rcall = redis.call
local SCALE = 4294967296
local MAXP = 2097151
local CLASSES = {"LOW", "NORMAL", "HIGH", "CRITICAL"}
local rebaseAt = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local nLanes = tonumber(ARGV[3])

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
  local was = v
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
  if v ~= was then rcall("HSET", fairKey, "v", v) end
  clocks[i] = v
  counts[i] = count
  return v
end

local function countClockOf(i)
  clockOf(i)
  return counts[i]
end


-- Quotas first, for every tenant of the call, before any tag is written: ARGV from pos
-- holds Q, then Q x (tenant, quota, jobs it adds). Returns the next ARGV position, or
-- the refusal.
local function checkQuotas(pos)
  local checks = tonumber(ARGV[pos])
  pos = pos + 1
  for _ = 1, checks do
    local tenant, quota, adding = ARGV[pos], tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
    pos = pos + 3
    local backlog = 0
    local fields = {}
    for _, c in ipairs(CLASSES) do
      fields[#fields + 1] = "f:" .. tenant .. ":" .. c
      fields[#fields + 1] = "w:" .. tenant .. ":" .. c
    end
    for i = 1, nLanes do
      local flows = rcall("HMGET", KEYS[2 * i - 1], unpack(fields))
      local used = false
      for k = 1, #flows, 2 do
        local f, w = tonumber(flows[k]), tonumber(flows[k + 1])
        if f and w and w > 0 then
          used = true
          local ahead = f - countClockOf(i)
          if ahead > 0 then backlog = backlog + math.ceil(ahead / w) end
        end
      end
      if used then -- only a lane the tenant has used can hold its parked jobs
        backlog = backlog + rcall("ZCARD", baseOf(i) .. "sf:park:" .. tenant)
      end
    end
    if quota > 0 and backlog + adding > quota then
      return pos, {"REFUSED", tenant, backlog, quota}
    end
  end
  return pos, nil
end

-- Tagging: one call per job, in order; `flush` writes the flows and clocks back.
local flows = {}
local order = {}
local fmax = {}
local function tag(i, tenant, class, step, delayed)
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
  return p
end

local function flush()
  for _, flow in ipairs(order) do
    rcall("HSET", KEYS[2 * flow[1] - 1], flow[2], flow[3], flow[4], flow[5])
  end
  for i, f in pairs(fmax) do
    local stored = tonumber(rcall("HGET", KEYS[2 * i - 1], "fmaxw")) or 0
    if f > stored then rcall("HSET", KEYS[2 * i - 1], "fmaxw", f) end
  end
end
