--[[
  Reserve (after fair_lib.lua): quota checks, then one priority per job.
  ARGV[4] Q, then Q x (tenant, quota, adding), then per job: lane index, tenant, class,
  step, delayed (1/0). Returns {"OK", p1, p2, ...} or {"REFUSED", tenant, backlog, quota}.
]]
local pos, refused = checkQuotas(4)
if refused then return refused end
local out = {"OK"}
while pos <= #ARGV do
  out[#out + 1] = tag(tonumber(ARGV[pos]), ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3]),
    ARGV[pos + 4] == "1")
  pos = pos + 5
end
flush()
return out
