#!lua flags=allow-oom
-- requeue: put dead letters back on the ready stream (an operator's "retry"). Each one becomes a fresh job with
-- its original fields and job id, a full set of attempts (no `attempts` field) and the error it died with as
-- `last_error`; its dead-letter entry and dead-index entry are removed.
--
-- KEYS[1]  dead-letter stream
-- KEYS[2]  dead index hash (job id -> dead-letter entry id)
-- KEYS[3]  ready stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- KEYS[6]  priorities hash (optional, with KEYS[7..]: without them every job goes to the ready stream)
-- KEYS[7..21] the streams of priority levels 1..15 (a job goes back to its `priority` field's level)
-- ARGV[1]  now, ms since the Unix epoch
-- ARGV[2]  events stream MAXLEN (approximate); 0 = no event
-- ARGV[3..] dead-letter entry ids
--
-- Returns one code per entry id:
--   1  requeued (event `requeued`)
--   0  no such dead letter (already requeued or purged)
--  -1  left dead: its job id is live again (in the index: re-enqueued since it died)
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
local dead, deadids, ready, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, maxlen = ARGV[1], ARGV[2]
local out = {}
local ls = lanes(ready, 6)
for i = 3, #ARGV do
  local did = ARGV[i]
  local r = redis.call('XRANGE', dead, did, did)
  if not r[1] then
    out[#out + 1] = 0
  else
    local f = r[1][2]
    local jid, err = did, nil
    for j = 1, #f, 2 do
      if f[j] == 'dead_job' then jid = f[j + 1] elseif f[j] == 'dead_error' then err = f[j + 1] end
    end
    if redis.call('HEXISTS', index, jid) == 1 then
      out[#out + 1] = -1
    else
      local nf = {'id', jid}
      for j = 1, #f, 2 do
        local name = f[j]
        if string.sub(name, 1, 5) ~= 'dead_' and name ~= 'id' and name ~= 'attempts' and name ~= 'last_error' then
          nf[#nf + 1] = name
          nf[#nf + 1] = f[j + 1]
        end
      end
      if err and err ~= '' then
        nf[#nf + 1] = 'last_error'
        nf[#nf + 1] = err
      end
      local nid = redis.call('XADD', lane_of(ls, nf), '*', unpack(nf))
      redis.call('HSET', index, jid, nid)
      redis.call('XDEL', dead, did)
      if redis.call('HGET', deadids, jid) == did then
        redis.call('HDEL', deadids, jid)
      end
      event(events, maxlen, 'event', 'requeued', 'id', jid, 'ms', now)
      out[#out + 1] = 1
    end
  end
end
return out
