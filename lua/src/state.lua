#!lua flags=no-writes
-- state: where a job is now, read atomically.
--
-- KEYS[1]  index hash (job id -> entry id)
-- KEYS[2]  delayed sorted set
-- KEYS[3]  scheduled stream
-- KEYS[4]  ready stream
-- KEYS[5]  job record hash
-- KEYS[6]  dead index hash (job id -> dead-letter entry id)
-- KEYS[7]  parked sorted set
-- ARGV[1]  consumer group
-- ARGV[2]  job id
--
-- Returns {state, entry id, attempts made, owner, deliveries}, state one of:
--   'delayed'    in the delayed set, never attempted        (entry id: scheduled entry)
--   'failed'     in the delayed set after a failed attempt, waiting for its retry
--   'parked'     paused by a signal, waiting to be resumed  (entry id: scheduled entry)
--   'waiting'    on the ready stream, not delivered         (entry id: ready entry)
--   'active'     on the ready stream and pending            (owner: consumer, deliveries: delivery count)
--   'completed'  finished; its record is within retention   (entry id: '')
--   'cancelled'  cancelled by a signal; its record is within retention
--   'dead'       in the dead-letter stream                   (entry id: dead-letter entry)
--   'unknown'    none of the above (never existed, or its record expired)
--- @include "lib/entry"
--- @include "lib/last_delivered"

local index, delayed, scheduled, ready, job, deadids, parked =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, jid = ARGV[1], ARGV[2]
local loc = redis.call('HGET', index, jid)
if redis.call('ZSCORE', parked, jid) then
  local r = {}
  if loc then r = redis.call('XRANGE', scheduled, loc, loc) end
  local made = 0
  if r[1] then made = job_fields(r[1][2], 0) end
  return {'parked', loc or '', made, '', 0}
end
if redis.call('ZSCORE', delayed, jid) then
  local r = {}
  if loc then r = redis.call('XRANGE', scheduled, loc, loc) end
  local made = 0
  if r[1] then made = job_fields(r[1][2], 0) end
  if made > 0 then return {'failed', loc or '', made, '', 0} end
  return {'delayed', loc or '', made, '', 0}
end
local eid = loc or jid
if string.match(eid, '^%d+%-%d+$') then
  local r = redis.call('XRANGE', ready, eid, eid)
  if r[1] then
    local made = job_fields(r[1][2], 0)
    local p = redis.pcall('XPENDING', ready, group, eid, eid, 1) -- no group yet: nothing is active
    if p[1] then return {'active', eid, made, p[1][2], p[1][4]} end
    -- Not pending: waiting if not yet delivered; otherwise it finished and awaits trimming (see ack.lua).
    if undelivered(ready, group, eid) then
      return {'waiting', eid, made, '', 0}
    end
  end
end
local recorded = redis.call('HGET', job, 'state')
if recorded == 'completed' or recorded == 'cancelled' then
  return {recorded, '', tonumber(redis.call('HGET', job, 'attempt')) or 0, '', 0}
end
local did = redis.call('HGET', deadids, jid)
if did then return {'dead', did, 0, '', 0} end
return {'unknown', '', 0, '', 0}
