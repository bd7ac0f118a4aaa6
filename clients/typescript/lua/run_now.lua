#!lua flags=allow-oom
-- run_now: an operator's "promote": a delayed job, or a failed one waiting for its retry, goes onto the ready
-- stream now instead of at its due time. Its attempts and last error stay as they are.
--
-- KEYS[1]  delayed sorted set
-- KEYS[2]  scheduled stream
-- KEYS[3]  ready stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- KEYS[6]  priorities hash (optional, with KEYS[7..]: without them the job goes to the ready stream)
-- KEYS[7..21] the streams of priority levels 1..15 (the job goes to its `priority` field's level)
-- ARGV[1]  job id
-- ARGV[2]  now, ms since the Unix epoch
-- ARGV[3]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns:
--   1  moved to the ready stream (event `promoted`)
--   0  not delayed or failed-waiting (nothing done)
--  -1  its body was gone: the stray id is dropped from the delayed set and the index
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
-- lib/to_ready: move a delayed (or failed, retry-waiting) job's body onto the stream of its level.
-- to_ready(scheduled, ls, index, jid) -> true if moved (the body gets its `id` field, the index points at the
-- new entry, the scheduled entry is deleted); false if its body was gone (the index entry is dropped).
-- `ls` is the queue's level streams (lib/lanes). The caller removes `jid` from the delayed set either way.
local function to_ready(scheduled, ls, index, jid)
  local sid = redis.call('HGET', index, jid)
  local r = {}
  if sid then r = redis.call('XRANGE', scheduled, sid, sid) end
  if not r[1] then
    redis.call('HDEL', index, jid)
    return false
  end
  local fields = r[1][2]
  local has_id = false
  for i = 1, #fields, 2 do
    if fields[i] == 'id' then has_id = true end
  end
  if not has_id then
    fields[#fields + 1] = 'id'
    fields[#fields + 1] = jid
  end
  local nid = redis.call('XADD', lane_of(ls, fields), '*', unpack(fields))
  redis.call('HSET', index, jid, nid)
  redis.call('XDEL', scheduled, sid)
  return true
end
-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end
local delayed, scheduled, ready, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jid, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not redis.call('ZSCORE', delayed, jid) then return 0 end
local moved = to_ready(scheduled, lanes(ready, 6), index, jid)
redis.call('ZREM', delayed, jid)
if not moved then return -1 end
event(events, maxlen, 'event', 'promoted', 'id', jid, 'ms', now)
return 1
