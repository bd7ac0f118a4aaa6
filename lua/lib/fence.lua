-- lib/fence: the fence. A delivery may change a job only while its consumer holds the entry under the same
-- delivery count (the token) it was handed with; a reclaimed, acked or re-delivered entry fails the check.
-- owns(ready, group, consumer, eid, token) -> true if `consumer` holds `eid` under delivery `token`
local function owns(ready, group, consumer, eid, token)
  local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
  return p[1] ~= nil and p[1][4] == token
end
