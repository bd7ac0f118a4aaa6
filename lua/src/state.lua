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
-- KEYS[8]  events stream
-- KEYS[9]  dead-letter stream (a dead job's attempts are read from its dead letter)
-- KEYS[10] priorities hash (optional, with KEYS[11..]: without them only the ready stream is looked at)
-- KEYS[11..25] the streams of priority levels 1..15 (waiting and active jobs are looked for on every level)
-- KEYS[26] held sorted set (optional: entries set aside by per-key limits, section 6h, are waiting)
-- ARGV[1]  consumer group
-- ARGV[2]  job id
-- ARGV[3]  most events read looking for the job's `completed` event when nothing else knows it (0 = none)
--
-- Returns {state, entry id, attempts made, owner, deliveries, finished ms, level}, state one of:
--   'delayed'    in the delayed set, never attempted        (entry id: scheduled entry)
--   'failed'     in the delayed set after a failed attempt, waiting for its retry
--   'parked'     paused by a signal, waiting to be resumed  (entry id: scheduled entry)
--   'waiting'    on the ready stream, not delivered         (entry id: ready entry)
--   'active'     on the ready stream and pending            (owner: consumer, deliveries: delivery count)
--   'completed'  finished: its record is within retention, or (attempts 0: not recorded; only for a job whose
--                id is its entry id, `<entry id>@<level>`, or a generated `~<ms>.<hex>`) the newest of the last ARGV[3] events that names it is a `completed` one
--                (entry id: ''; finished ms from the record or the event)
--   'cancelled'  cancelled by a signal; its record is within retention
--   'dead'       in the dead-letter stream                   (entry id: dead-letter entry; attempts: its
--                `dead_attempts`)
--   'unknown'    none of the above (never existed, or its record expired)
-- level: the priority level whose stream holds a waiting or active job's entry (0 otherwise)
--- @include "lib/entry"
--- @include "lib/last_delivered"
--- @include "lib/lanes"
--- @include "lib/held"

local index, delayed, scheduled, ready, job, deadids, parked, events, dead =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local group, jid, scan = ARGV[1], ARGV[2], tonumber(ARGV[3])
local loc = redis.call('HGET', index, jid)
if redis.call('ZSCORE', parked, jid) then
  local r = {}
  if loc then r = redis.call('XRANGE', scheduled, loc, loc) end
  local made = 0
  if r[1] then made = job_fields(r[1][2], 0) end
  return {'parked', loc or '', made, '', 0, 0, 0}
end
if redis.call('ZSCORE', delayed, jid) then
  local r = {}
  if loc then r = redis.call('XRANGE', scheduled, loc, loc) end
  local made = 0
  if r[1] then made = job_fields(r[1][2], 0) end
  if made > 0 then return {'failed', loc or '', made, '', 0, 0, 0} end
  return {'delayed', loc or '', made, '', 0, 0, 0}
end
local eid = loc or entry_of(jid)
local stream, fields, level = locate(lanes(ready, 10), eid, jid)
if stream then
  local made = job_fields(fields, 0)
  local p = redis.pcall('XPENDING', stream, group, eid, eid, 1) -- no group yet: nothing is active
  if p[1] then return {'active', eid, made, p[1][2], p[1][4], 0, level} end
  -- Not pending: waiting if not yet delivered; otherwise it finished and awaits trimming (see ack.lua).
  if undelivered(stream, group, eid) or is_held(10, stream, eid) then
    return {'waiting', eid, made, '', 0, 0, level}
  end
end
local rec = redis.call('HMGET', job, 'state', 'attempt', 'finished_ms')
if rec[1] == 'completed' or rec[1] == 'cancelled' then
  return {rec[1], '', tonumber(rec[2]) or 0, '', 0, tonumber(rec[3]) or 0, 0}
end
local did = redis.call('HGET', deadids, jid)
if did then
  local made = 0
  local d = redis.call('XRANGE', dead, did, did)
  if d[1] then
    local f = d[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'dead_attempts' then made = tonumber(f[i + 1]) or 0 end
    end
  end
  return {'dead', did, made, '', 0, 0, 0}
end
-- No record. A job whose id is its entry id (enqueued by a plain XADD; named and retried jobs get records), or a
-- generated `~<ms>.<hex>` one, may still be named by a `completed` event: the newest event that names it decides. Newest first, a page at a time
-- (each event can list many ids); the job completed after its entry was added, so older events need no look.
local since = tonumber(string.match(jid, '^(%d+)%-%d+$') or string.match(jid, '^(%d+)%-%d+@%d+$'))
-- A generated id of a partitioned queue (section 2a) carries its producer's clock: a minute's leeway for skew.
local generated = tonumber(string.match(jid, '^~(%d+)%.%x+$'))
if generated then since = generated - 60000 end
if not since then return {'unknown', '', 0, '', 0, 0, 0} end
local needle = ' ' .. jid .. ' '
local upper, read, size = '+', 0, 4
while read < scan do
  -- Small pages first: a job that just completed is named by one of the newest events.
  local page = redis.call('XREVRANGE', events, upper, '-', 'COUNT', math.min(size, scan - read))
  size = math.min(size * 2, 50)
  for _, e in ipairs(page) do
    if tonumber(string.match(e[1], '^(%d+)')) < since then return {'unknown', '', 0, '', 0, 0, 0} end
    local f = e[2]
    local ids, id, ms
    for i = 3, #f, 2 do
      if f[i] == 'ids' then ids = f[i + 1] elseif f[i] == 'id' then id = f[i + 1] elseif f[i] == 'ms' then ms = f[i + 1] end
    end
    if f[2] == 'completed' and ids and string.find(' ' .. ids .. ' ', needle, 1, true) then
      return {'completed', '', 0, '', 0, tonumber(ms) or 0, 0}
    end
    -- Its newest event says something else happened last (died and purged, ...): not completed.
    if id == jid then return {'unknown', '', 0, '', 0, 0, 0} end
  end
  if #page == 0 then break end
  read = read + #page
  upper = '(' .. page[#page][1]
end
return {'unknown', '', 0, '', 0, 0, 0}
