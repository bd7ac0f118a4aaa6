#!lua flags=allow-oom
-- delete: remove one job for good, in any state but running: a waiting job's ready entry, a delayed, failed or
-- parked job's body and set member, a dead letter, a completed or cancelled job's record; then its index entry,
-- record, checkpoints and the dedup record its id made, so the id can be used again. A running job is left
-- alone (code 2): a worker owns it, and the caller cancels it through a signal instead, fenced like every other
-- change of a running job.
--
-- KEYS[1]  ready stream
-- KEYS[2]  delayed sorted set
-- KEYS[3]  scheduled stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  parked sorted set
-- KEYS[6]  dead-letter stream
-- KEYS[7]  dead index hash (job id -> dead-letter entry id)
-- KEYS[8]  the job's record hash
-- KEYS[9]  the job's checkpoint stream
-- KEYS[10] the dedup record of the job id (string: job id)
-- KEYS[11] events stream
-- KEYS[12] priorities hash (optional, with KEYS[13..]: without them only the ready stream is looked at)
-- KEYS[13..27] the streams of priority levels 1..15 (a waiting job is looked for on every level)
-- KEYS[28] held sorted set (optional: entries set aside by per-key limits, section 6h, are waiting)
-- ARGV[1]  consumer group
-- ARGV[2]  job id
-- ARGV[3]  now, ms since the Unix epoch
-- ARGV[4]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {code, state it was in}:
--   1  deleted; state: waiting | delayed | failed | parked | dead | completed | cancelled (event `deleted`)
--   2  running: nothing done; state: active
--   0  no such job; state: ''
--- @include "lib/entry"
--- @include "lib/last_delivered"
--- @include "lib/settle_lag"
--- @include "lib/event"
--- @include "lib/lanes"
--- @include "lib/held"
local ready, delayed, scheduled, index, parked, dead, deadids, job, ckpt, dedup, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local group, jid, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local loc = redis.call('HGET', index, jid)
local state
if redis.call('ZSCORE', parked, jid) or redis.call('ZSCORE', delayed, jid) then
  state = 'parked'
  if not redis.call('ZSCORE', parked, jid) then
    state = 'delayed'
    local r = {}
    if loc then r = redis.call('XRANGE', scheduled, loc, loc) end
    if r[1] and job_fields(r[1][2], 0) > 0 then state = 'failed' end
  end
  redis.call('ZREM', parked, jid)
  redis.call('ZREM', delayed, jid)
  if loc then redis.call('XDEL', scheduled, loc) end
else
  local eid = loc or entry_of(jid)
  local stream = locate(lanes(ready, 12), eid, jid)
  if stream then
    local p = redis.pcall('XPENDING', stream, group, eid, eid, 1)
    if type(p) == 'table' and p[1] then return {2, 'active'} end
    if undelivered(stream, group, eid) or is_held(12, stream, eid) then
      state = 'waiting'
      unhold(12, stream, eid)
      redis.call('XDEL', stream, eid)
      settle_lag(stream, group)
    end
  end
end
if not state then
  local did = redis.call('HGET', deadids, jid)
  if did and redis.call('XDEL', dead, did) == 1 then state = 'dead' end
  if did then redis.call('HDEL', deadids, jid) end
end
if not state then
  local recorded = redis.call('HGET', job, 'state')
  if recorded == 'completed' or recorded == 'cancelled' then state = recorded end
end
if not state then return {0, ''} end
redis.call('HDEL', index, jid)
redis.call('DEL', job, ckpt)
if redis.call('GET', dedup) == jid then redis.call('DEL', dedup) end
event(events, maxlen, 'event', 'deleted', 'id', jid, 'state', state, 'ms', now)
return {1, state}
