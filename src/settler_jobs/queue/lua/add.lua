--[[
  Add (after fair_lib.lua and bullmq's add scripts wrapped as settlerAddPrioritized and
  settlerAddDelayed): quota checks, then for each job its tag and bullmq's own add with
  that priority, all in one script, so a refusal enqueues nothing.
  ARGV[4] Q, then Q x (tenant, quota, adding), then per job: lane index, tenant, class,
  step, delayed (1/0) and bullmq's three add arguments (packed args, data, packed opts).
  KEYS after the lanes: bullmq's 9 prioritized-add keys, then its 6 delayed-add keys.
  Returns {"OK", p1, p2, ...} or {"REFUSED", tenant, backlog, quota}.
]]
local pos, refused = checkQuotas(4)
if refused then return refused end
local prioKeys, delayedKeys = {}, {}
for k = 1, 9 do prioKeys[k] = KEYS[2 * nLanes + k] end
for k = 1, 6 do delayedKeys[k] = KEYS[2 * nLanes + 9 + k] end
local out = {"OK"}
while pos <= #ARGV do
  local delayed = ARGV[pos + 4] == "1"
  local p = tag(tonumber(ARGV[pos]), ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3]),
    delayed)
  local jobArgv = {ARGV[pos + 5], ARGV[pos + 6], ARGV[pos + 7]}
  if delayed then
    settlerAddDelayed(delayedKeys, jobArgv, p)
  else
    settlerAddPrioritized(prioKeys, jobArgv, p)
  end
  out[#out + 1] = p
  pos = pos + 8
end
flush()
return out
