#!lua
-- signal: record a control signal for a queue and apply what the queue itself can apply at once.
--   pause / resume (target `queue`): set or clear the persistent paused flag, so workers started later obey it.
--   pause (target `job:<id>`): a waiting or delayed job is parked here; a running one is parked by its worker
--     once it has checkpointed (park.lua).
--   resume (target `job:<id>`): a parked job goes back to the ready stream.
--   cancel (target `job:<id>`): a job that has not started (waiting, delayed or parked) is removed and recorded as
--     cancelled right here, so it never runs; a running job is cancelled by the worker that holds it.
--   quiet / stop / anything else: only recorded; workers apply them.
-- Every signal is appended to the signals stream (the history, trimmed approximately to `maxlen`); what was
-- applied here is appended to the outcomes stream with receiver `queue`.
--
-- KEYS[1]  signals stream
-- KEYS[2]  outcomes stream
-- KEYS[3]  paused flag (hash: signal, sender, ms)
-- KEYS[4]  ready stream
-- KEYS[5]  delayed sorted set
-- KEYS[6]  scheduled stream
-- KEYS[7]  index hash (job id -> entry id)
-- KEYS[8]  job record hash of the target job (job targets; any key under the queue's tag otherwise)
-- KEYS[9]  parked sorted set (job id, score = parked at, ms)
-- KEYS[10] priorities hash (optional, with KEYS[11..]: without them only the ready stream is looked at and a
--          resumed job goes back to it)
-- KEYS[11..25] the streams of priority levels 1..15 (a waiting job is looked for on every level; a resumed job
--          goes back to its `priority` field's level)
-- KEYS[26] held sorted set (optional: entries set aside by per-key limits, section 6h, are waiting)
-- ARGV[1]  kind: pause | resume | quiet | stop | cancel | custom:<name>
-- ARGV[2]  target: queue | worker:<consumer> | job:<id>
-- ARGV[3]  sender
-- ARGV[4]  now, ms since the Unix epoch
-- ARGV[5]  payload (CBOR, '' = none)
-- ARGV[6]  maxlen of the signals and outcomes streams (approximate)
-- ARGV[7]  consumer group
-- ARGV[8]  record retention, ms (how long a cancelled job's record is kept)
--
-- Returns {signal id, code}:
--   1  applied here (pause, resume, a job cancelled, parked or resumed before it started running)
--   2  recorded for workers to apply (a running job, quiet, stop, custom)
--   0  ignored: a job signal for a job in no state it applies to
--- @include "lib/last_delivered"
--- @include "lib/settle_lag"
--- @include "lib/lanes"
--- @include "lib/held"

local signals, outcomes, paused, ready, delayed, scheduled, index, job, parked =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local kind, target, sender, now, payload, maxlen, group, retention =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local sid = redis.call('XADD', signals, 'MAXLEN', '~', maxlen, '*', 'kind', kind, 'target', target,
  'sender', sender, 'ms', now, 'payload', payload)
local function outcome(result, reason)
  redis.call('XADD', outcomes, 'MAXLEN', '~', maxlen, '*', 'signal', sid, 'receiver', 'queue',
    'outcome', result, 'reason', reason, 'ms', now)
end
if kind == 'pause' and target == 'queue' then
  redis.call('HSET', paused, 'signal', sid, 'sender', sender, 'ms', now)
  outcome('applied', 'queue paused')
  return {sid, 1}
end
if kind == 'resume' and target == 'queue' then
  redis.call('DEL', paused)
  outcome('applied', 'queue resumed')
  return {sid, 1}
end
if string.sub(target, 1, 4) == 'job:' and (kind == 'cancel' or kind == 'pause' or kind == 'resume') then
  local jid = string.sub(target, 5)
  local loc = redis.call('HGET', index, jid)
  -- Where is it? 'parked' | 'delayed' (body in scheduled) | 'waiting' / 'running' (entry in ready) | nil
  local where, eid, stream
  local ls = lanes(ready, 10)
  if redis.call('ZSCORE', parked, jid) then
    where = 'parked'
  elseif redis.call('ZSCORE', delayed, jid) then
    where = 'delayed'
  else
    eid = loc or entry_of(jid)
    stream = locate(ls, eid, jid)
    if stream then
      local p = redis.pcall('XPENDING', stream, group, eid, eid, 1)
      if type(p) == 'table' and p[1] then
        where = 'running'
      else
        -- Not pending: waiting unless already delivered (a finished entry awaiting its trim).
        if undelivered(stream, group, eid) or is_held(10, stream, eid) then where = 'waiting' end
      end
    end
  end
  if where == 'running' then
    if kind == 'resume' then
      outcome('ignored', 'the job is running')
      return {sid, 0}
    end
    return {sid, 2}
  end
  if kind == 'cancel' and where then
    if where == 'parked' or where == 'delayed' then
      redis.call('ZREM', parked, jid)
      redis.call('ZREM', delayed, jid)
      if loc then redis.call('XDEL', scheduled, loc) end
    else
      unhold(10, stream, eid)
      redis.call('XDEL', stream, eid)
      settle_lag(stream, group)
    end
    redis.call('HDEL', index, jid)
    redis.call('HSET', job, 'state', 'cancelled', 'finished_ms', now, 'cancelled_by', sender)
    redis.call('PEXPIRE', job, retention)
    outcome('applied', 'cancelled before it ran')
    return {sid, 1}
  end
  if kind == 'pause' and (where == 'waiting' or where == 'delayed') then
    if where == 'waiting' then
      local fields = redis.call('XRANGE', stream, eid, eid)[1][2]
      local has_id = false
      for i = 1, #fields, 2 do if fields[i] == 'id' then has_id = true end end
      if not has_id then
        fields[#fields + 1] = 'id'
        fields[#fields + 1] = jid
      end
      local nid = redis.call('XADD', scheduled, '*', unpack(fields))
      unhold(10, stream, eid)
      redis.call('XDEL', stream, eid)
      settle_lag(stream, group)
      redis.call('HSET', index, jid, nid)
    else
      redis.call('ZREM', delayed, jid)
    end
    redis.call('ZADD', parked, now, jid)
    outcome('applied', 'parked before it ran')
    return {sid, 1}
  end
  if kind == 'resume' and where == 'parked' then
    local r = {}
    if loc then r = redis.call('XRANGE', scheduled, loc, loc) end
    redis.call('ZREM', parked, jid)
    if r[1] then
      local nid = redis.call('XADD', lane_of(ls, r[1][2]), '*', unpack(r[1][2]))
      redis.call('HSET', index, jid, nid)
      redis.call('XDEL', scheduled, loc)
      outcome('applied', 'resumed: back on the ready stream')
      return {sid, 1}
    end
    redis.call('HDEL', index, jid)
  end
  outcome('ignored', 'the job is not in a state this signal applies to')
  return {sid, 0}
end
return {sid, 2}
