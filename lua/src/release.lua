#!lua flags=allow-oom
-- release: hand deliveries back for immediate redelivery (graceful shutdown, or entries this consumer was
-- assigned but never saw). Fenced like ack. Each owned entry is re-added at the tail of the ready stream with
-- its job id and with the released delivery not counted as an attempt, then acked and deleted. Its
-- `last_error` goes: the delivery before the next one ended by hand-back, not by an error.
--
-- KEYS[1]    ready stream
-- KEYS[2]    index hash (job id -> entry id)
-- KEYS[3]    events stream
-- ARGV[1]    consumer group
-- ARGV[2]    consumer name
-- ARGV[3]    now, ms since the Unix epoch
-- ARGV[4]    events stream MAXLEN (approximate); 0 = no event
-- ARGV[5..]  two per delivery: entry id, token (delivery count)
--
-- A caller the ACL does not allow every command this script runs gets an error (NOPERM) and nothing changes.
--
-- Returns an array with one code per delivery, in order:
--   1  released: a new ready entry holds the job
--   0  stale: not owned by this delivery; nothing changed
--  -1  entry gone from the stream; its pending entry was acked
--- @include "lib/fence"
--- @include "lib/hand_back"
--- @include "lib/permitted"
--- @include "lib/event"

local ready, index, events = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local no = refused({{'XADD', ready, '*', 'f', 'v'}, {'HSET', index, 'f', 'v'}, {'XACK', ready, group, '0-1'},
  {'XDEL', ready, '0-1'}, {'XADD', events, '*', 'f', 'v'}})
if no then return no end
local codes = {}
local n = (#ARGV - 4) / 2
for i = 1, n do
  local eid, token = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  if not owns(ready, group, consumer, eid, token) then
    codes[i] = 0
  else
    local r = redis.call('XRANGE', ready, eid, eid)
    if not r[1] then
      redis.call('XACK', ready, group, eid)
      codes[i] = -1
    else
      local out, jid, made = handed_back(r[1][2], ready, eid, token)
      local nid = redis.call('XADD', ready, '*', unpack(out))
      redis.call('HSET', index, jid, nid)
      redis.call('XACK', ready, group, eid)
      redis.call('XDEL', ready, eid)
      event(events, maxlen, 'event', 'released', 'id', jid,
        'attempt', tostring(made), 'ms', now)
      codes[i] = 1
    end
  end
end
return codes
