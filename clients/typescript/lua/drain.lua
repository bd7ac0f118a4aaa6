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
