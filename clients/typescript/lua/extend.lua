#!lua flags=allow-oom
-- extend: renew the leases of a batch of deliveries held by one consumer. The lease clock is the entry's idle
-- time in the consumer group's pending list; XCLAIM ... JUSTID to the owner resets it without bumping the
-- delivery count, so the token stays valid. Fenced: an entry owned by someone else, or by this consumer under
-- a newer delivery, is not touched.
--
-- KEYS[1]      ready stream
-- ARGV[1]      consumer group
-- ARGV[2]      consumer name
-- ARGV[3..]    two per delivery: entry id, token (delivery count)
--
-- Returns an array with one code per delivery, in order:
--   1  extended
--   0  lost: this delivery no longer owns the entry (reclaimed, acked or deleted); nothing changed
-- lib/fence: the fence. A delivery may change a job only while its consumer holds the entry under the same
-- delivery count (the token) it was handed with; a reclaimed, acked or re-delivered entry fails the check.
-- owns(ready, group, consumer, eid, token) -> true if `consumer` holds `eid` under delivery `token`
local function owns(ready, group, consumer, eid, token)
  local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
  return p[1] ~= nil and p[1][4] == token
end

local ready, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local codes = {}
local n = (#ARGV - 2) / 2
for i = 1, n do
  local eid, token = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i])
  if owns(ready, group, consumer, eid, token) then
    redis.call('XCLAIM', ready, group, consumer, 0, eid, 'JUSTID')
    codes[i] = 1
  else
    codes[i] = 0
  end
end
return codes
