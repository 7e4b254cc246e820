--[[
  Settler's replacement for bullmq's moveJobFromPrioritizedToActive (patched into
  moveToActive and moveToFinished by queue/fair.py): per-tenant concurrency caps by
  parking. A popped job whose tenant is at its tier's cap (while other work waits) moves,
  with its score, to "<queue>:sf:park:<tenant>"; it comes back straight to active when
  its tenant has room and it is ahead of the waiting head, or when nothing else waits.
  Each job is parked at most once. A tier without a cap in "<queue>:sf:caps" pops as
  bullmq does (plus reading the job's tenant).
]]
local function settlerRoom(base, tenant, cap)
  local key = base .. "sf:act:" .. tenant
  local n = rcall("SCARD", key)
  if n < cap then return true end
  -- Lazily forget finished jobs: a running job holds its lock. One MGET and one SREM
  -- per 1,000 members rather than an EXISTS and an SREM per member.
  local ids = rcall("SMEMBERS", key)
  for start = 1, #ids, 1000 do
    local chunk, lockKeys = {}, {}
    for i = start, math.min(start + 999, #ids) do
      chunk[#chunk + 1] = ids[i]
      lockKeys[#lockKeys + 1] = base .. ids[i] .. ":lock"
    end
    local locks = rcall("MGET", unpack(lockKeys))
    local gone = {}
    for i, id in ipairs(chunk) do
      if not locks[i] then gone[#gone + 1] = id end
    end
    if #gone > 0 then
      rcall("SREM", key, unpack(gone))
      n = n - #gone
    end
  end
  return n < cap
end

local function settlerUnpark(base, tenant, activeKey)
  local parkKey = base .. "sf:park:" .. tenant
  while true do
    local popped = rcall("ZPOPMIN", parkKey)
    local nxt = rcall("ZRANGE", parkKey, 0, 0, "WITHSCORES")
    if nxt[2] then
      rcall("ZADD", base .. "sf:parked", nxt[2], tenant)
    else
      rcall("ZREM", base .. "sf:parked", tenant)
    end
    if #popped == 0 then return nil end
    if rcall("EXISTS", base .. popped[1]) == 1 then -- a cancelled job is gone
      rcall("SADD", base .. "sf:act:" .. tenant, popped[1])
      rcall("LPUSH", activeKey, popped[1])
      return popped[1]
    end
  end
end

local function moveJobFromPrioritizedToActive(priorityKey, activeKey, priorityCounterKey)
  local base = string.sub(priorityKey, 1, #priorityKey - 11) -- strip "prioritized"
  local parkedIdx = base .. "sf:parked"
  -- Parked tenants first: one with room again runs if its best job is ahead of the head.
  local cands = rcall("ZRANGE", parkedIdx, 0, 3, "WITHSCORES")
  if #cands > 0 then
    local head = rcall("ZRANGE", priorityKey, 0, 0, "WITHSCORES")
    local headScore = head[2] and tonumber(head[2])
    for k = 1, #cands, 2 do
      if headScore and tonumber(cands[k + 1]) > headScore then break end
      local tenant = cands[k]
      local cap = tonumber(rcall("HGET", base .. "sf:pcap", tenant)) or 0
      if cap <= 0 or settlerRoom(base, tenant, cap) then
        local id = settlerUnpark(base, tenant, activeKey)
        if id then return id end
      end
    end
  end
  local capsKey = base .. "sf:caps"
  local full = {}
  for _ = 1, 1000 do
    local popped = rcall("ZPOPMIN", priorityKey)
    if #popped == 0 then break end
    local id, score = popped[1], popped[2]
    local data = rcall("HGET", base .. id, "data")
    local tenant, tier
    if data then
      tenant, tier = string.match(data, '^{"tenantId":"([^"]+)","tenantTier":"([^"]+)"')
    end
    local cap = 0
    if tier then cap = tonumber(rcall("HGET", capsKey, tier)) or 0 end
    if cap <= 0 then
      rcall("LPUSH", activeKey, id)
      return id
    end
    if not full[tenant] and settlerRoom(base, tenant, cap) then
      rcall("SADD", base .. "sf:act:" .. tenant, id)
      rcall("LPUSH", activeKey, id)
      return id
    end
    full[tenant] = true
    rcall("ZADD", base .. "sf:park:" .. tenant, score, id)
    rcall("ZADD", parkedIdx, "LT", score, tenant)
    rcall("HSET", base .. "sf:pcap", tenant, cap)
    rcall("HINCRBY", base .. "sf:hits", tier, 1)
    rcall("HINCRBY", base .. "sf:hits", "t:" .. tenant, 1)
  end
  -- Work-conserving: nothing else can run, so the best parked job runs over its cap.
  local best = rcall("ZRANGE", parkedIdx, 0, 0)
  if best[1] then
    local id = settlerUnpark(base, best[1], activeKey)
    if id then return id end
  end
  if rcall("ZCARD", priorityKey) == 0 then rcall("DEL", priorityCounterKey) end
  return nil
end
