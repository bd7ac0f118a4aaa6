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
-- lib/last_delivered: how far a consumer group has read the ready stream.
-- last_delivered(ready, group) -> the group's last-delivered id ('0-0' without the stream or the group)
local function last_delivered(ready, group)
  local groups = redis.pcall('XINFO', 'GROUPS', ready)
  if groups.err then return '0-0' end
  for _, g in ipairs(groups) do
    local name, id
    for k = 1, #g, 2 do
      if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then id = g[k + 1] end
    end
    if name == group then return id end
  end
  return '0-0'
end
-- undelivered(ready, group, eid) -> true if entry `eid` (an `ms-seq` id) comes after the group's last-delivered
-- id: it has not been delivered yet
local function undelivered(ready, group, eid)
  local ems, eseq = string.match(eid, '^(%d+)-(%d+)$')
  local lms, lseq = string.match(last_delivered(ready, group), '^(%d+)-(%d+)$')
  ems, eseq, lms, lseq = tonumber(ems), tonumber(eseq), tonumber(lms), tonumber(lseq)
  return ems > lms or (ems == lms and eseq > lseq)
end
-- lib/settle_lag: after deleting undelivered entries from the ready stream, keep the group's `lag` readable.
-- Redis reports lag as nil while a deleted entry lies after the group's last-delivered id. When nothing
-- undelivered is left, moving the last-delivered id to the stream's last id (with entries-read = entries
-- added) changes no delivery and makes lag exact (0) again. Needs lib/last_delivered.
-- settle_lag(ready, group)
local function settle_lag(ready, group)
  local last = last_delivered(ready, group)
  if last == '0-0' then return end -- no group (or nothing delivered and nothing to fix)
  if redis.call('XRANGE', ready, '(' .. last, '+', 'COUNT', 1)[1] then return end
  local info = redis.call('XINFO', 'STREAM', ready)
  local added
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
  if added then redis.call('XGROUP', 'SETID', ready, group, '$', 'ENTRIESREAD', added) end
end

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
  local where, eid
  if redis.call('ZSCORE', parked, jid) then
    where = 'parked'
  elseif redis.call('ZSCORE', delayed, jid) then
    where = 'delayed'
  else
    eid = loc or jid
    if string.match(eid, '^%d+%-%d+$') and redis.call('XRANGE', ready, eid, eid)[1] then
      local p = redis.pcall('XPENDING', ready, group, eid, eid, 1)
      if type(p) == 'table' and p[1] then
        where = 'running'
      else
        -- Not pending: waiting unless already delivered (a finished entry awaiting its trim).
        if undelivered(ready, group, eid) then where = 'waiting' end
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
      redis.call('XDEL', ready, eid)
      settle_lag(ready, group)
    end
    redis.call('HDEL', index, jid)
    redis.call('HSET', job, 'state', 'cancelled', 'finished_ms', now, 'cancelled_by', sender)
    redis.call('PEXPIRE', job, retention)
    outcome('applied', 'cancelled before it ran')
    return {sid, 1}
  end
  if kind == 'pause' and (where == 'waiting' or where == 'delayed') then
    if where == 'waiting' then
      local fields = redis.call('XRANGE', ready, eid, eid)[1][2]
      local has_id = false
      for i = 1, #fields, 2 do if fields[i] == 'id' then has_id = true end end
      if not has_id then
        fields[#fields + 1] = 'id'
        fields[#fields + 1] = jid
      end
      local nid = redis.call('XADD', scheduled, '*', unpack(fields))
      redis.call('XDEL', ready, eid)
      settle_lag(ready, group)
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
      local nid = redis.call('XADD', ready, '*', unpack(r[1][2]))
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
