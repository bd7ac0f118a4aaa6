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
-- lib/lanes: a queue's priority levels (SPEC §6g). Level 0 is the ready stream, level p >= 1 the stream
-- `<P>:ready:<p>`; a script that routes or finds jobs by level takes the priorities hash and the streams of levels
-- 1..15 as its last KEYS (a caller that passes none gets level 0 only, as before priorities).
-- lanes(ready, first) -> {level 0 stream, level 1 stream, ...}: the hash at KEYS[first] says how many (`levels`,
--   1 when unset), the streams follow it
local function lanes(ready, first)
  local out = {ready}
  local conf = KEYS[first]
  if not conf then return out end
  local n = tonumber(redis.call('HGET', conf, 'levels')) or 1
  for p = 1, n - 1 do
    local k = KEYS[first + p]
    if not k then break end
    out[#out + 1] = k
  end
  return out
end
-- own_id(stream, eid) -> the job id of an entry without an `id` field on `stream`: its entry id on the ready stream,
--   `<entry id>@<p>` on the stream of level p (named `<P>:ready:<p>`), since entry ids repeat across levels
local function own_id(stream, eid)
  local p = string.match(stream, ':ready:(%d+)$')
  if p then return eid .. '@' .. p end
  return eid
end
-- entry_of(jid) -> the entry id an unnamed job's id holds (`<ms>-<seq>`, or `<ms>-<seq>@<p>` above level 0), or jid
local function entry_of(jid)
  return string.match(jid, '^(%d+%-%d+)@%d+$') or jid
end
-- level_of(fields) -> the entry's `priority` field as a level (0 when absent or not a number)
local function level_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'priority' then return math.max(0, math.floor(tonumber(fields[i + 1]) or 0)) end
  end
  return 0
end
-- lane_of(ls, fields) -> the stream an entry goes back to: its level's, or the last level's when it names a level
--   the queue no longer has
local function lane_of(ls, fields)
  return ls[math.min(level_of(fields), #ls - 1) + 1]
end
-- locate(ls, eid, jid) -> the stream holding entry `eid` of job `jid`, the entry's fields and its level, or nil.
--   Entry ids repeat across streams, so the entry's job id (its `id` field, else the entry id) must be `jid`.
local function locate(ls, eid, jid)
  if not string.match(eid, '^%d+%-%d+$') then return nil end
  for level, s in ipairs(ls) do
    local r = redis.call('XRANGE', s, eid, eid)
    if r[1] then
      local id, f = nil, r[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'id' then id = f[i + 1] end
      end
      id = id or own_id(s, eid)
      if id == jid then return s, f, level - 1 end
    end
  end
  return nil
end
-- lib/held: entries set aside by per-key limits (SPEC §6h) stay on their stream, acked and listed in `<P>:held`
-- (member = the entry's address: its id on the ready stream, `<entry id>@<p>` on level p). They are waiting jobs.
-- A script that finds jobs takes `<P>:held` right after the level tail (KEYS[first + 16], `first` being the
-- priorities hash). Needs lib/lanes.
-- is_held(first, stream, eid) -> true if the entry is held
local function is_held(first, stream, eid)
  local key = KEYS[first + 16]
  return key ~= nil and redis.call('ZSCORE', key, own_id(stream, eid)) ~= false
end
-- unhold(first, stream, eid): the entry is no longer held (its per-key list entry is dropped when its turn comes)
local function unhold(first, stream, eid)
  local key = KEYS[first + 16]
  if key then redis.call('ZREM', key, own_id(stream, eid)) end
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
