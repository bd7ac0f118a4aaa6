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
