#!lua flags=allow-oom
-- promote: move delayed jobs that are due onto the ready stream, oldest due first, at most `count` per call.
--
-- KEYS[1]  delayed sorted set (job id, score = due time ms)
-- KEYS[2]  scheduled stream (bodies of delayed jobs)
-- KEYS[3]  ready stream
-- KEYS[4]  index hash (job id -> entry id; for a delayed job, its scheduled entry)
-- KEYS[5]  events stream
-- KEYS[6]  schedules sorted set (read only: its earliest fire time is returned)
-- KEYS[7]  rate limit hash (read only: whether the queue has a limit is returned)
-- KEYS[8]  priorities hash (read only: levels and weights are returned; optional, with KEYS[9..])
-- KEYS[9..23] the streams of priority levels 1..15 (a job whose `priority` field names level p goes to level
--          min(p, levels - 1); without KEYS[8] every job goes to the ready stream)
-- KEYS[24] held sorted set (read only, optional: jobs held back by per-key limits, section 6h)
-- ARGV[1]  now, ms since the Unix epoch; 0 = the Redis server's clock (what workers pass: a host whose clock runs
--          ahead must not promote jobs early)
-- ARGV[2]  count: most jobs moved by this call
-- ARGV[3]  events stream MAXLEN (approximate)
--
-- Returns {promoted, next_due, next_fire, limited, now, levels, weights}:
--   promoted  number of jobs moved to the ready stream (a delayed id with no body is dropped and not counted)
--   next_due  due time (ms) of the earliest job still delayed, or -1 if none
--   next_fire the earliest fire time (ms) of a schedule that is not paused, or -1 if none (fire.lua fires it)
--   limited   2 if the queue has a rate limit or per-key limits, or jobs held back by per-key limits (KEYS[24],
--             after the level tail) (workers then read through limit.lua, without prefetch), 1 if it has only a
--             concurrency limit (read through limit.lua), else 0
--   now       the time the call used, ms (the server's, when ARGV[1] is 0)
--   levels    the priorities hash's `levels` ('' when unset: one level)
--   weights   its `weights` ('' when unset: strict order)
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
local delayed, scheduled, ready, index, events, schedules, limit = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7]
local now, count, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if tonumber(now) == 0 then
  local t = redis.call('TIME')
  now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, count)
local promoted = 0
local ls = {ready}
if due[1] then ls = lanes(ready, 8) end
for _, jid in ipairs(due) do
  if to_ready(scheduled, ls, index, jid) then promoted = promoted + 1 end
  redis.call('ZREM', delayed, jid)
end
local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] then next_due = nxt[2] end
local fire = redis.call('ZRANGEBYSCORE', schedules, '-inf', '(+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local next_fire = -1
if fire[2] then next_fire = fire[2] end
local limited = 0
if redis.call('HEXISTS', limit, 'rate') == 1 or redis.call('HEXISTS', limit, 'key_field') == 1
  or (KEYS[24] and redis.call('ZCARD', KEYS[24]) > 0) then
  limited = 2
elseif redis.call('HEXISTS', limit, 'concurrency') == 1 then
  limited = 1
end
local levels, weights = '', ''
if KEYS[8] then
  local conf = redis.call('HMGET', KEYS[8], 'levels', 'weights')
  levels, weights = conf[1] or '', conf[2] or ''
end
return {promoted, next_due, next_fire, limited, tonumber(now), levels, weights}
