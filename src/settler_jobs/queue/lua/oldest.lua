--[[
  The creation time of a lane's oldest waiting job (queue/reads.py), read in one call:
  the plain wait list's tail, the jobs of the prioritized set's first levels (flow heads
  sit within one step of the head's level) and each parked tenant's head.
  KEYS[1] "<queue>:prioritized"   KEYS[2] "<queue>:wait"   KEYS[3] "<queue>:sf:parked"
  ARGV[1] "<queue>:"   ARGV[2] level window (score units)   ARGV[3] most jobs to scan
]]
local rcall = redis.call
local base = ARGV[1]
local oldest = false
local function consider(id)
  local ts = tonumber(rcall("HGET", base .. id, "timestamp"))
  if ts and (not oldest or ts < oldest) then oldest = ts end
end
local tail = rcall("LINDEX", KEYS[2], -1)
if tail then consider(tail) end
local head = rcall("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if head[2] then
  local low = tonumber(head[2])
  local ids = rcall("ZRANGEBYSCORE", KEYS[1], low, low + tonumber(ARGV[2]), "LIMIT", 0,
    tonumber(ARGV[3]))
  for _, id in ipairs(ids) do consider(id) end
end
for _, tenant in ipairs(rcall("ZRANGE", KEYS[3], 0, -1)) do
  local first = rcall("ZRANGE", base .. "sf:park:" .. tenant, 0, 0)
  if first[1] then consider(first[1]) end
end
return oldest
