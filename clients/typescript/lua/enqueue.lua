#!lua
-- enqueue: add one job that needs more than a plain XADD: a caller-chosen job id, a dedup key, or a delay.
-- With a dedup record (ttl > 0) a second enqueue of the same key returns the first job's id and adds nothing;
-- a job id that is still live (in the index) is never added twice either.
--
-- KEYS[1]  the stream of the job's priority level: the ready stream for level 0, `<P>:ready:<p>` for level p
-- KEYS[2]  delayed sorted set
-- KEYS[3]  scheduled stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  dedup key (string: job id), used only when ARGV[2] > 0
-- KEYS[6]  priorities hash (read only, only when the fields carry `priority` >= 1: the level must exist)
-- ARGV[1]  job id; '' = none (only for a job of a level above 0, ready now, without dedup: the entry gets no `id`
--          field and no index entry, and its job id is `<entry id>@<level>`)
-- ARGV[2]  dedup ttl, ms (0 = no dedup record)
-- ARGV[3]  due time, ms since the Unix epoch (0 or <= now: ready at once)
-- ARGV[4]  now, ms since the Unix epoch
-- ARGV[5..] entry fields, flat (name, value, ...); must not contain `id`; `priority` (level >= 1) needs KEYS[6]
--
-- Returns {code, job id}:
--   1  added to the ready stream
--   2  added to the delayed set
--   0  duplicate: nothing added; the job id is the existing job's
--  -1  no such priority level: nothing added; the second element is the queue's number of levels
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
local ready, delayed, scheduled, index, dedup = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jid, ttl, due, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ttl > 0 then
  local existing = redis.call('GET', dedup)
  if existing then return {0, existing} end
end
if jid ~= '' and redis.call('HEXISTS', index, jid) == 1 then
  return {0, jid}
end
local fields = {'id', jid}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
for i = 5, #ARGV - 1, 2 do
  if ARGV[i] == 'priority' then
    local levels = 1
    if KEYS[6] then levels = tonumber(redis.call('HGET', KEYS[6], 'levels')) or 1 end
    if (tonumber(ARGV[i + 1]) or 0) >= levels then return {-1, levels} end
  end
end
if jid == '' then
  -- An unnamed job of a level above 0: a plain entry, named by its entry id and level.
  local plain = {}
  for i = 5, #ARGV do plain[#plain + 1] = ARGV[i] end
  return {1, own_id(ready, redis.call('XADD', ready, '*', unpack(plain)))}
end
local code
if due > now then
  local sid = redis.call('XADD', scheduled, '*', unpack(fields))
  redis.call('ZADD', delayed, due, jid)
  redis.call('HSET', index, jid, sid)
  code = 2
else
  local nid = redis.call('XADD', ready, '*', unpack(fields))
  redis.call('HSET', index, jid, nid)
  code = 1
end
if ttl > 0 then
  redis.call('SET', dedup, jid, 'PX', ttl)
end
return {code, jid}
