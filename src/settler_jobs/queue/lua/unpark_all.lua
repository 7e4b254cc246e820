--[[
  Caps turned off: put every parked job of the lane back into its prioritized set with its
  score (bullmq's own pop never looks at the parked sets).
  KEYS[1] "<queue>:prioritized"   KEYS[2] "<queue>:sf:parked"   ARGV[1] "<queue>:"
]]
local rcall = redis.call
local moved = 0
for _, tenant in ipairs(rcall("ZRANGE", KEYS[2], 0, -1)) do
  local parkKey = ARGV[1] .. "sf:park:" .. tenant
  local members = rcall("ZRANGE", parkKey, 0, -1, "WITHSCORES")
  for k = 1, #members, 2 do
    rcall("ZADD", KEYS[1], members[k + 1], members[k])
    moved = moved + 1
  end
  rcall("DEL", parkKey)
end
rcall("DEL", KEYS[2], ARGV[1] .. "sf:pcap")
return moved
