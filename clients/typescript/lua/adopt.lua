#!lua flags=allow-oom
-- adopt: take over the pending deliveries of a worker judged crashed (no beat for `crash_after` ms), at once
-- instead of after their leases expire, counting each as an attempt (exhausted jobs are dead-lettered). When the
-- crashed worker has nothing pending any more, its consumer, record and registry entry are removed (never
-- before: XGROUP DELCONSUMER would orphan pending entries).
--
-- KEYS[1]  ready stream
-- KEYS[2]  index hash
-- KEYS[3]  dead-letter stream
-- KEYS[4]  dead index hash
-- KEYS[5]  events stream
-- KEYS[6]  workers sorted set
-- KEYS[7]  the crashed worker's record hash
-- KEYS[8..] the queue's other priority level streams (section 6g), if it has levels: deliveries are taken from
--          KEYS[1] only, but the worker is removed only once none of these holds one of its deliveries either
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name of the adopter
-- ARGV[3]  consumer name of the crashed worker
-- ARGV[4]  now, ms since the Unix epoch; 0 = the Redis server's clock (the heartbeats' clock)
-- ARGV[5]  crash_after, ms (a worker whose last beat is older is crashed)
-- ARGV[6]  count: most deliveries taken
-- ARGV[7]  default max attempts
-- ARGV[8]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {code, taken, dead_lettered}:
--   code   1 adopted (taken may be empty), 2 adopted everything and removed the crashed worker,
--          0 not crashed (it beat recently), nothing done
--   taken  array of {entry id, token, fields}, now owned by the adopter
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
-- lib/dead_letter: move a job to the dead-letter stream (the caller acks and deletes its entry and writes the
-- event).
-- dead_letter(dead, deadids, index, eid, jid, fields, reason, err, made, now): appends the entry's fields (minus
-- any earlier dead_* fields) behind the dead_* fields, indexes the dead letter by job id and drops the job id from
-- the live index. `now` is the text stored as dead_ms.
local function dead_letter(dead, deadids, index, eid, jid, fields, reason, err, made, now)
  local out = {'dead_reason', reason, 'dead_error', err, 'dead_ms', now, 'dead_entry', eid,
    'dead_attempts', tostring(made), 'dead_job', jid}
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 5) ~= 'dead_' then
      out[#out + 1] = fields[i]
      out[#out + 1] = fields[i + 1]
    end
  end
  local did = redis.call('XADD', dead, '*', unpack(out))
  redis.call('HSET', deadids, jid, did)
  redis.call('HDEL', index, jid)
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
-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end

local ready, index, dead, deadids, events, workers, record =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, adopter, crashed, now, crash_after, count, default_max, maxlen =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local beat = tonumber(redis.call('ZSCORE', workers, crashed))
if beat and now - beat <= crash_after then
  return {0, {}, 0}
end
local pending = redis.call('XPENDING', ready, group, '-', '+', count, crashed)
local taken, dead_n = {}, 0
for _, p in ipairs(pending) do
  local eid = p[1]
  local claimed = redis.call('XCLAIM', ready, group, adopter, 0, eid)
  local e = claimed[1]
  if e and e[2] then
    local fields = e[2]
    local deliveries = p[4] + 1
    local attempts, max, jid = job_fields(fields, default_max)
    jid = jid or own_id(ready, eid)
    local made = attempts_made(attempts, deliveries, false)
    if made >= max then
      dead_letter(dead, deadids, index, eid, jid, fields, 'exhausted', 'worker crashed', made,
        string.format('%.0f', now))
      redis.call('XACK', ready, group, eid)
      redis.call('XDEL', ready, eid)
      event(events, maxlen, 'event', 'dead', 'id', jid, 'attempt', tostring(made),
        'ms', string.format('%.0f', now), 'reason', 'exhausted', 'error', 'worker crashed')
      dead_n = dead_n + 1
    else
      taken[#taken + 1] = {eid, deliveries, fields}
      event(events, maxlen, 'event', 'stalled', 'id', jid,
        'attempt', tostring(made), 'ms', string.format('%.0f', now), 'reason', 'worker crashed')
    end
  elseif not e then
    -- Deleted meanwhile: XCLAIM dropped it from the pending list.
  end
end
local holds = redis.call('XPENDING', ready, group, '-', '+', 1, crashed)[1]
for k = 8, #KEYS do
  if holds then break end
  local p = redis.pcall('XPENDING', KEYS[k], group, '-', '+', 1, crashed)
  holds = type(p) == 'table' and p[1]
end
if not holds then
  redis.pcall('XGROUP', 'DELCONSUMER', ready, group, crashed)
  for k = 8, #KEYS do redis.pcall('XGROUP', 'DELCONSUMER', KEYS[k], group, crashed) end
  redis.call('DEL', record)
  redis.call('ZREM', workers, crashed)
  return {2, taken, dead_n}
end
return {1, taken, dead_n}
