#!lua flags=allow-oom
-- adopt: take over the pending deliveries of a worker judged crashed (no beat for `crash_after` ms), at once
-- instead of after their leases expire, counting each as an attempt (exhausted jobs are dead-lettered). When the
-- crashed worker has nothing pending any more, its consumer, record and registry entry are removed (never
-- before: XGROUP DELCONSUMER would orphan pending entries).
--
-- KEYS[1]  ready stream
-- KEYS[2]  index hash
-- KEYS[3]  dead-letter stream
-- KEYS[4]  dead index hash
-- KEYS[5]  events stream
-- KEYS[6]  workers sorted set
-- KEYS[7]  the crashed worker's record hash
-- KEYS[8..] the queue's other priority level streams (section 6g), if it has levels: deliveries are taken from
--          KEYS[1] only, but the worker is removed only once none of these holds one of its deliveries either
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name of the adopter
-- ARGV[3]  consumer name of the crashed worker
-- ARGV[4]  now, ms since the Unix epoch; 0 = the Redis server's clock (the heartbeats' clock)
-- ARGV[5]  crash_after, ms (a worker whose last beat is older is crashed)
-- ARGV[6]  count: most deliveries taken
-- ARGV[7]  default max attempts
-- ARGV[8]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {code, taken, dead_lettered}:
--   code   1 adopted (taken may be empty), 2 adopted everything and removed the crashed worker,
--          0 not crashed (it beat recently), nothing done
--   taken  array of {entry id, token, fields}, now owned by the adopter
--- @include "lib/entry"
--- @include "lib/dead_letter"
--- @include "lib/lanes"
--- @include "lib/event"

local ready, index, dead, deadids, events, workers, record =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, adopter, crashed, now, crash_after, count, default_max, maxlen =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local beat = tonumber(redis.call('ZSCORE', workers, crashed))
if beat and now - beat <= crash_after then
  return {0, {}, 0}
end
local pending = redis.call('XPENDING', ready, group, '-', '+', count, crashed)
local taken, dead_n = {}, 0
for _, p in ipairs(pending) do
  local eid = p[1]
  local claimed = redis.call('XCLAIM', ready, group, adopter, 0, eid)
  local e = claimed[1]
  if e and e[2] then
    local fields = e[2]
    local deliveries = p[4] + 1
    local attempts, max, jid = job_fields(fields, default_max)
    jid = jid or own_id(ready, eid)
    local made = attempts_made(attempts, deliveries, false)
    if made >= max then
      dead_letter(dead, deadids, index, eid, jid, fields, 'exhausted', 'worker crashed', made,
        string.format('%.0f', now))
      redis.call('XACK', ready, group, eid)
      redis.call('XDEL', ready, eid)
      event(events, maxlen, 'event', 'dead', 'id', jid, 'attempt', tostring(made),
        'ms', string.format('%.0f', now), 'reason', 'exhausted', 'error', 'worker crashed')
      dead_n = dead_n + 1
    else
      taken[#taken + 1] = {eid, deliveries, fields}
      event(events, maxlen, 'event', 'stalled', 'id', jid,
        'attempt', tostring(made), 'ms', string.format('%.0f', now), 'reason', 'worker crashed')
    end
  elseif not e then
    -- Deleted meanwhile: XCLAIM dropped it from the pending list.
  end
end
local holds = redis.call('XPENDING', ready, group, '-', '+', 1, crashed)[1]
for k = 8, #KEYS do
  if holds then break end
  local p = redis.pcall('XPENDING', KEYS[k], group, '-', '+', 1, crashed)
  holds = type(p) == 'table' and p[1]
end
if not holds then
  redis.pcall('XGROUP', 'DELCONSUMER', ready, group, crashed)
  for k = 8, #KEYS do redis.pcall('XGROUP', 'DELCONSUMER', KEYS[k], group, crashed) end
  redis.call('DEL', record)
  redis.call('ZREM', workers, crashed)
  return {2, taken, dead_n}
end
return {1, taken, dead_n}
