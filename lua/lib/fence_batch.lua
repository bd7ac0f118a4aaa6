-- lib/fence_batch: the fence (lib/fence) for a batch of deliveries, in one XPENDING page (or a few).
-- owned_between(ready, group, consumer, lo, hi, n) -> entry id -> delivery count, for every entry from `lo` to
-- `hi` that `consumer` holds, for a batch of `n` deliveries
local function owned_between(ready, group, consumer, lo, hi, n)
  local owned = {}
  local page = n + 16
  while true do
    local p = redis.call('XPENDING', ready, group, lo, hi, page, consumer)
    for _, e in ipairs(p) do owned[e[1]] = e[4] end
    if #p < page then break end
    lo = '(' .. p[#p][1]
  end
  return owned
end
