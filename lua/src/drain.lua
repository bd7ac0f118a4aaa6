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
-- KEYS[6]  priorities hash (optional, with KEYS[7..22]; needed only to drain held jobs)
-- KEYS[7..21] the streams of priority levels 1..15
-- KEYS[22] held sorted set: with KEYS[1] the ready stream (level 0), jobs held back by per-key limits (section
--          6h) on any level are deleted too, up to `count` per call
-- ARGV[1]  consumer group
-- ARGV[2]  count: most waiting and most delayed jobs deleted by this call
-- ARGV[3]  now, ms since the Unix epoch
-- ARGV[4]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {waiting deleted (held ones included), delayed deleted, more}: more = 1 if either kind may have jobs
-- left (event `drained` with both counts when anything went)
--- @include "lib/last_delivered"
--- @include "lib/settle_lag"
--- @include "lib/event"
--- @include "lib/lanes"
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
local held = KEYS[22]
local gone, held_more = 0, false
if held and own_id(ready, '') == '' then
  local ls = lanes(ready, 6)
  for _, address in ipairs(redis.call('ZRANGE', held, 0, count - 1)) do
    local eid, p = string.match(address, '^(%d+%-%d+)@(%d+)$')
    if not eid then eid, p = address, '0' end
    local s = ls[tonumber(p) + 1]
    local e = s and redis.call('XRANGE', s, eid, eid)[1]
    if e then
      local jid = own_id(s, eid)
      for i = 1, #e[2], 2 do
        if e[2][i] == 'id' then jid = e[2][i + 1] end
      end
      unindex(jid, eid)
      redis.call('XDEL', s, eid)
      gone = gone + 1
    end
    redis.call('ZREM', held, address)
  end
  held_more = redis.call('ZCARD', held) > 0
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
if #waiting + gone + #due > 0 then
  event(events, maxlen, 'event', 'drained', 'waiting', #waiting + gone,
    'delayed', #due, 'ms', now)
end
if #waiting < count then settle_lag(ready, group) end
local more = 0
if #waiting == count or #due == count or held_more then more = 1 end
return {#waiting + gone, #due, more}
