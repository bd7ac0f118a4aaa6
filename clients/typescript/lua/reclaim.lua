#!lua flags=allow-oom
-- reclaim: stalled-job recovery. Takes entries whose lease expired (idle in the pending list for at least
-- min_idle ms) and gives them to the calling consumer, following the XAUTOCLAIM cursor one bounded page per
-- call. Each take counts as a delivery; a job whose attempts made (previous deliveries included) reached its
-- max_attempts is dead-lettered with reason `exhausted` instead of being handed out.
--
-- KEYS[1]  ready stream
-- KEYS[2]  index hash (job id -> entry id)
-- KEYS[3]  dead-letter stream
-- KEYS[4]  dead index hash (job id -> dead-letter entry id)
-- KEYS[5]  events stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name (the new owner)
-- ARGV[3]  min idle, ms (the lease)
-- ARGV[4]  cursor: start entry id ('0-0' to start a pass)
-- ARGV[5]  count: at most this many entries are taken (XAUTOCLAIM inspects at most 10x as many)
-- ARGV[6]  now, ms since the Unix epoch
-- ARGV[7]  default max attempts, for entries without a max_attempts field
-- ARGV[8]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {next_cursor, taken, dead_lettered, gone}:
--   next_cursor    '0-0' when the pass is complete
--   taken          array of {entry id, token (delivery count), fields (flat array)}, now owned by the caller
--   dead_lettered  number of exhausted jobs moved to the dead-letter stream
--   gone           number of pending ids whose entries had been deleted (dropped from the pending list)
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

local ready, index, dead, deadids, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, min_idle, cursor, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, default_max, maxlen = ARGV[6], tonumber(ARGV[7]), ARGV[8]

local r = redis.call('XAUTOCLAIM', ready, group, consumer, min_idle, cursor, 'COUNT', count)
local taken, dead_n = {}, 0
for _, e in ipairs(r[2]) do
  local eid, fields = e[1], e[2]
  if fields then
    local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
    local deliveries = p[1][4]
    local attempts, max, jid = job_fields(fields, default_max)
    jid = jid or own_id(ready, eid)
    local made = attempts_made(attempts, deliveries, false)
    if made >= max then
      dead_letter(dead, deadids, index, eid, jid, fields, 'exhausted', 'lease expired (worker stalled or crashed)',
        made, now)
      redis.call('XACK', ready, group, eid)
      redis.call('XDEL', ready, eid)
      event(events, maxlen, 'event', 'dead', 'id', jid, 'attempt', tostring(made),
        'ms', now, 'reason', 'exhausted')
      dead_n = dead_n + 1
    else
      taken[#taken + 1] = {eid, deliveries, fields}
      event(events, maxlen, 'event', 'stalled', 'id', jid,
        'attempt', tostring(made), 'ms', now)
    end
  end
end
local gone = 0
if r[3] then gone = #r[3] end
return {r[1], taken, dead_n, gone}
