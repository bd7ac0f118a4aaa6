#!lua flags=allow-oom
-- park: take a running job off its worker without counting an attempt, keeping its body until it is resumed
-- (a paused session: it has saved a checkpoint and gives its worker slot back). Fenced like ack. The body moves to
-- the scheduled stream; the job id goes into the parked set (score = when parked) instead of the delayed set, so
-- nothing promotes it; `signal.lua` resumes it.
--
-- KEYS[1]  ready stream
-- KEYS[2]  scheduled stream
-- KEYS[3]  parked sorted set (job id, score = parked at, ms)
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  entry id
-- ARGV[4]  token (delivery count)
-- ARGV[5]  now, ms since the Unix epoch
-- ARGV[6]  events stream MAXLEN (approximate); 0 = no event
--
-- A caller the ACL does not allow every command this script runs gets an error (NOPERM) and nothing changes.
--
-- Returns 1 (parked), 0 (stale: not owned by this delivery; nothing changed), -1 (entry gone; pending entry acked).
--- @include "lib/fence"
--- @include "lib/hand_back"
--- @include "lib/permitted"
--- @include "lib/event"

local ready, scheduled, parked, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, eid, token, now, maxlen =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local no = refused({{'XADD', scheduled, '*', 'f', 'v'}, {'ZADD', parked, '0', 'm'}, {'HSET', index, 'f', 'v'},
  {'XACK', ready, group, '0-1'}, {'XDEL', ready, '0-1'}, {'XADD', events, '*', 'f', 'v'}})
if no then return no end
if not owns(ready, group, consumer, eid, token) then
  return 0
end
local r = redis.call('XRANGE', ready, eid, eid)
if not r[1] then
  redis.call('XACK', ready, group, eid)
  return -1
end
local out, jid, made = handed_back(r[1][2], ready, eid, token)
local sid = redis.call('XADD', scheduled, '*', unpack(out))
redis.call('ZADD', parked, now, jid)
redis.call('HSET', index, jid, sid)
redis.call('XACK', ready, group, eid)
redis.call('XDEL', ready, eid)
event(events, maxlen, 'event', 'parked', 'id', jid, 'attempt', tostring(made),
  'ms', now)
return 1
