#!lua flags=allow-oom
-- park: take a running job off its worker without counting an attempt, keeping its body until it is resumed
-- (a paused session: it has saved a checkpoint and gives its worker slot back). Fenced like ack. The body moves to
-- the scheduled stream; the job id goes into the parked set (score = when parked) instead of the delayed set, so
-- nothing promotes it; `signal.lua` resumes it.
--
-- KEYS[1]  ready stream
-- KEYS[2]  scheduled stream
-- KEYS[3]  parked sorted set (job id, score = parked at, ms)
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  entry id
-- ARGV[4]  token (delivery count)
-- ARGV[5]  now, ms since the Unix epoch
-- ARGV[6]  events stream MAXLEN (approximate); 0 = no event
--
-- A caller the ACL does not allow every command this script runs gets an error (NOPERM) and nothing changes.
--
-- Returns 1 (parked), 0 (stale: not owned by this delivery; nothing changed), -1 (entry gone; pending entry acked).
-- lib/fence: the fence. A delivery may change a job only while its consumer holds the entry under the same
-- delivery count (the token) it was handed with; a reclaimed, acked or re-delivered entry fails the check.
-- owns(ready, group, consumer, eid, token) -> true if `consumer` holds `eid` under delivery `token`
local function owns(ready, group, consumer, eid, token)
  local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
  return p[1] ~= nil and p[1][4] == token
end
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
-- lib/hand_back: an entry rewritten for its next delivery after a hand-back (release, park). The delivery handed
-- back is not counted as an attempt, and its `last_error` goes: it ended by hand-back, not by an error. An entry
-- without `enqueued_ms` gets its entry id's time, so the job keeps its enqueue time in the new entry.
-- handed_back(fields, stream, eid, token) -> new fields (`id` and `attempts` last), job id, attempts made
local function handed_back(fields, stream, eid, token)
  local attempts, jid, out, timed = 0, own_id(stream, eid), {}, false
  for j = 1, #fields, 2 do
    local f = fields[j]
    if f == 'attempts' then attempts = math.max(0, math.floor(tonumber(fields[j + 1]) or 0))
    elseif f == 'id' then jid = fields[j + 1]
    elseif f == 'enqueued_ms' then timed = true
    end
    if f ~= 'attempts' and f ~= 'id' and f ~= 'last_error' then
      out[#out + 1] = f
      out[#out + 1] = fields[j + 1]
    end
  end
  local made = attempts_made(attempts, token, false)
  if not timed then
    out[#out + 1] = 'enqueued_ms'
    out[#out + 1] = string.match(eid, '^(%d+)')
  end
  out[#out + 1] = 'id'
  out[#out + 1] = jid
  out[#out + 1] = 'attempts'
  out[#out + 1] = tostring(made)
  return out, jid, made
end
-- lib/permitted: a script whose effects take several commands checks first that its caller may run each of
-- them, because Redis does not roll a script back: an ACL that refuses a later command would leave the earlier
-- effects in place (a job re-added but its old entry kept, say).
-- refused(calls) -> nil, or an error reply naming the first call (a table: command and arguments) the caller may
-- not run
local function refused(calls)
  for _, c in ipairs(calls) do
    if not redis.acl_check_cmd(unpack(c)) then
      return redis.error_reply('NOPERM rill: this user may not run ' .. c[1] .. ' on ' .. tostring(c[2]))
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

local ready, scheduled, parked, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, eid, token, now, maxlen =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local no = refused({{'XADD', scheduled, '*', 'f', 'v'}, {'ZADD', parked, '0', 'm'}, {'HSET', index, 'f', 'v'},
  {'XACK', ready, group, '0-1'}, {'XDEL', ready, '0-1'}, {'XADD', events, '*', 'f', 'v'}})
if no then return no end
if not owns(ready, group, consumer, eid, token) then
  return 0
end
local r = redis.call('XRANGE', ready, eid, eid)
if not r[1] then
  redis.call('XACK', ready, group, eid)
  return -1
end
local out, jid, made = handed_back(r[1][2], ready, eid, token)
local sid = redis.call('XADD', scheduled, '*', unpack(out))
redis.call('ZADD', parked, now, jid)
redis.call('HSET', index, jid, sid)
redis.call('XACK', ready, group, eid)
redis.call('XDEL', ready, eid)
event(events, maxlen, 'event', 'parked', 'id', jid, 'attempt', tostring(made),
  'ms', now)
return 1
