#!lua flags=allow-oom
-- fire: run a schedule's due fire times, exactly once across every worker. The caller read the schedule's next
-- fire time T from the schedules set and computed (from the schedule's definition) which fire times to run now
-- and the next one after them; this call enqueues those jobs and moves the schedule to its next time only if the
-- set still says T (the fence: whoever fires first wins, any other caller holding T changes nothing), and only
-- once T has come by the Redis server's clock (a host whose clock runs ahead cannot fire early).
--
-- KEYS[1]  schedules sorted set (name, score = next fire time ms; +inf while paused)
-- KEYS[2]  the schedule's hash (payload, fired, last_fire_ms, next_ms, ...)
-- KEYS[3]  ready stream
-- KEYS[4]  events stream
-- KEYS[5]  priorities hash (optional, with KEYS[6..20]: without them every job goes to the ready stream)
-- KEYS[6..20] the streams of priority levels 1..15 (a schedule with a `priority` enqueues on that level, or the
--          last one the queue has)
-- ARGV[1]  schedule name
-- ARGV[2]  T: the next fire time the caller read, ms
-- ARGV[3]  the next fire time after this call, ms
-- ARGV[4]  events stream MAXLEN (approximate); 0 = no event
-- ARGV[5..] fire times to enqueue now, ms, ascending (none: a missed fire skipped by its policy)
--
-- Returns {code, jobs enqueued, server now ms}:
--   1  fired: one entry per fire time (v, payload, enqueued_ms, x-schedule, x-fire-ms, and priority above level 0)
--      on the stream of the schedule's level, one `fired` event each (its `id` the job id: the entry id, with
--      `@<level>` above level 0); the set and the hash's next_ms moved to ARGV[3]
--   0  not fired: the set no longer says T (fired by another worker, updated, paused or removed)
--  -1  not fired: T, or the newest fire time asked for, has not come by the server's clock (server now in the
--      third item)
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
local schedules, def, ready, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local name, t, nxt, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local nows = string.format('%.0f', now)
local score = redis.call('ZSCORE', schedules, name)
if not score or tonumber(score) ~= t then return {0, 0, nows} end
-- Neither T nor any fire time asked for may be ahead of the server's clock.
local newest = t
if #ARGV >= 5 then newest = math.max(t, tonumber(ARGV[#ARGV])) end
if now < newest then return {-1, 0, nows} end
local d = redis.call('HMGET', def, 'payload', 'priority')
local payload, level = d[1], math.max(0, math.floor(tonumber(d[2]) or 0))
if not payload then
  -- A set member without its definition: drop it rather than fire nothing forever.
  redis.call('ZREM', schedules, name)
  return {0, 0, nows}
end
local stream = ready
if level > 0 then
  local ls = lanes(ready, 5)
  level = math.min(level, #ls - 1)
  stream = ls[level + 1]
end
local fired = 0
for i = 5, #ARGV do
  local id
  if level > 0 then
    id = redis.call('XADD', stream, '*', 'v', '1', 'payload', payload, 'enqueued_ms', nows,
      'x-schedule', name, 'x-fire-ms', ARGV[i], 'priority', tostring(level))
  else
    id = redis.call('XADD', stream, '*', 'v', '1', 'payload', payload, 'enqueued_ms', nows,
      'x-schedule', name, 'x-fire-ms', ARGV[i])
  end
  event(events, maxlen, 'event', 'fired', 'id', own_id(stream, id), 'schedule', name,
    'fire_ms', ARGV[i], 'ms', nows)
  fired = fired + 1
end
redis.call('ZADD', schedules, nxt, name)
redis.call('HSET', def, 'next_ms', nxt)
if fired > 0 then
  redis.call('HSET', def, 'last_fire_ms', ARGV[#ARGV])
  redis.call('HINCRBY', def, 'fired', fired)
end
return {1, fired, nows}
