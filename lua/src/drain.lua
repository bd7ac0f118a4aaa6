#!lua flags=allow-oom
-- drain: delete waiting jobs and delayed ones (failed jobs waiting for their retry included), at most `count` of
-- each per call, oldest first; running and parked jobs stay. Call again while `more` is 1. Each deleted job's
-- index entry goes too (its record and checkpoints expire by themselves). Once no waiting job is left, the
-- group's last-delivered id moves to the stream's end (lib/settle_lag) so its `lag` stays exact.
--
-- KEYS[1]  ready stream
-- KEYS[2]  delayed sorted set
-- KEYS[3]  scheduled stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- ARGV[1]  consumer group
-- ARGV[2]  count: most waiting and most delayed jobs deleted by this call
-- ARGV[3]  now, ms since the Unix epoch
-- ARGV[4]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {waiting deleted, delayed deleted, more}: more = 1 if either kind may have jobs left (event `drained`
-- with both counts when anything went)
--- @include "lib/last_delivered"
--- @include "lib/settle_lag"
--- @include "lib/event"
local ready, delayed, scheduled, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, count, now, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local function unindex(jid, eid)
  if redis.call('HGET', index, jid) == eid then redis.call('HDEL', index, jid) end
end
-- Waiting: the entries after the group's last-delivered id (none delivered, so none pending).
local waiting = redis.call('XRANGE', ready, '(' .. last_delivered(ready, group), '+', 'COUNT', count)
for _, e in ipairs(waiting) do
  local jid = e[1]
  for i = 1, #e[2], 2 do
    if e[2][i] == 'id' then jid = e[2][i + 1] end
  end
  unindex(jid, e[1])
  redis.call('XDEL', ready, e[1])
end
local due = redis.call('ZRANGE', delayed, 0, count - 1)
for _, jid in ipairs(due) do
  local sid = redis.call('HGET', index, jid)
  if sid then
    redis.call('XDEL', scheduled, sid)
    redis.call('HDEL', index, jid)
  end
  redis.call('ZREM', delayed, jid)
end
if #waiting + #due > 0 then
  event(events, maxlen, 'event', 'drained', 'waiting', #waiting,
    'delayed', #due, 'ms', now)
end
if #waiting < count then settle_lag(ready, group) end
local more = 0
if #waiting == count or #due == count then more = 1 end
return {#waiting, #due, more}
