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
-- lib/entry: what a job's stream entry says about its attempts.
-- job_fields(fields, default_max) -> attempts recorded on the entry, max attempts, job id (nil: the entry id)
local function job_fields(fields, default_max)
  local attempts, max, jid = 0, default_max, nil
  for i = 1, #fields, 2 do
    local f = fields[i]
    if f == 'attempts' then attempts = math.max(0, math.floor(tonumber(fields[i + 1]) or 0))
    elseif f == 'max_attempts' then max = math.floor(tonumber(fields[i + 1]) or default_max)
    elseif f == 'id' then jid = fields[i + 1]
    end
  end
  return attempts, max, jid
end
-- attempts_made(recorded, deliveries, failed) -> attempts made so far: those recorded on the entry plus this
-- entry's deliveries, where the latest one counts only if it `failed` (a stalled, handed-back or parked delivery,
-- or one just started, does not count itself)
local function attempts_made(recorded, deliveries, failed)
  if failed then return recorded + deliveries end
  return recorded + deliveries - 1
end
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
-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
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
