#!lua flags=allow-oom
-- fail: end one delivery that did not succeed. Fenced like ack. Either schedules a retry (a new entry carrying
-- the job id, the attempts made so far and the error) or moves the job to the dead-letter stream with its reason.
-- A retry is refused (the job dies) once attempts made reach max_attempts.
--
-- KEYS[1]  ready stream
-- KEYS[2]  delayed sorted set (job id, score = due time ms)
-- KEYS[3]  scheduled stream (bodies of delayed jobs)
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  dead-letter stream
-- KEYS[6]  dead index hash (job id -> dead-letter entry id)
-- KEYS[7]  events stream
-- KEYS[8]  job record hash (its `data` field, if set, becomes the payload of the retried job and is removed)
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  entry id
-- ARGV[4]  token (delivery count)
-- ARGV[5]  job id
-- ARGV[6]  now, ms since the Unix epoch
-- ARGV[7]  mode: 'retry' (retry if attempts remain), 'dead' (dead-letter now) or 'cancel' (end it as cancelled)
-- ARGV[8]  retry delay, ms (0 = ready again at once)
-- ARGV[9]  error text (stored as last_error / error)
-- ARGV[10] dead reason if the job dies: failed | exhausted | malformed | too_large
-- ARGV[11] default max attempts, for entries without a max_attempts field
-- ARGV[12] events stream MAXLEN (approximate); 0 = no event
-- ARGV[13] record retention, ms ('cancel': how long the cancelled record is kept)
--
-- Returns {code, attempts_made}:
--   1  retry scheduled in the delayed set
--   2  retry re-queued on the ready stream at once
--   3  dead-lettered
--   4  cancelled: entry acked and deleted, job record state = cancelled
--   0  stale: this delivery no longer owns the entry; nothing changed
--  -1  entry gone from the stream (deleted by someone else); its pending entry was acked
--- @include "lib/fence"
--- @include "lib/entry"
--- @include "lib/dead_letter"
--- @include "lib/event"

local ready, delayed, scheduled, index, dead, deadids, events, job =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local group, consumer, eid, token, jid = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now, mode, delay, err, reason = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local maxlen = ARGV[12]

if not owns(ready, group, consumer, eid, token) then
  return {0, 0}
end
local r = redis.call('XRANGE', ready, eid, eid)
if not r[1] then
  redis.call('XACK', ready, group, eid)
  return {-1, 0}
end
local fields = r[1][2]
-- a copy of the entry with some fields replaced (in place, keeping order) or appended
local function rewrite(set)
  local out, done = {}, {}
  for i = 1, #fields, 2 do
    local f = fields[i]
    local v = fields[i + 1]
    for _, kv in ipairs(set) do
      if kv[1] == f then v = kv[2]; done[f] = true end
    end
    out[#out + 1] = f
    out[#out + 1] = v
  end
  for _, kv in ipairs(set) do
    if not done[kv[1]] then
      out[#out + 1] = kv[1]
      out[#out + 1] = kv[2]
    end
  end
  return out
end

local recorded, max = job_fields(fields, tonumber(ARGV[11]))
local made = attempts_made(recorded, token, true)
redis.call('XACK', ready, group, eid)
redis.call('XDEL', ready, eid)

if mode == 'cancel' then
  redis.call('HDEL', index, jid)
  redis.call('HSET', job, 'state', 'cancelled', 'finished_ms', tostring(now), 'attempt', tostring(made))
  redis.call('PEXPIRE', job, ARGV[13])
  event(events, maxlen, 'event', 'cancelled', 'id', jid, 'attempt', tostring(made),
    'ms', tostring(now))
  return {4, made}
end

if mode == 'retry' and made < max then
  local set = {{'id', jid}, {'attempts', tostring(made)}, {'last_error', err}}
  -- The new entry's id is the retry's time: keep the job's enqueue time.
  local timed = false
  for i = 1, #fields, 2 do
    if fields[i] == 'enqueued_ms' then timed = true end
  end
  if not timed then set[#set + 1] = {'enqueued_ms', string.match(eid, '^(%d+)')} end
  local data = redis.call('HGET', job, 'data')
  if data then
    set[#set + 1] = {'payload', data}
    redis.call('HDEL', job, 'data')
  end
  local nf = rewrite(set)
  local code
  if delay > 0 then
    local sid = redis.call('XADD', scheduled, '*', unpack(nf))
    redis.call('ZADD', delayed, now + delay, jid)
    redis.call('HSET', index, jid, sid)
    code = 1
  else
    local nid = redis.call('XADD', ready, '*', unpack(nf))
    redis.call('HSET', index, jid, nid)
    code = 2
  end
  event(events, maxlen, 'event', 'retrying', 'id', jid, 'attempt', tostring(made),
    'ms', tostring(now), 'delay_ms', tostring(delay), 'error', err)
  return {code, made}
end

if mode == 'retry' then reason = 'exhausted' end
dead_letter(dead, deadids, index, eid, jid, fields, reason, err, made, tostring(now))
event(events, maxlen, 'event', 'dead', 'id', jid, 'attempt', tostring(made),
  'ms', tostring(now), 'reason', reason, 'error', err)
return {3, made}
