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
-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end

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
