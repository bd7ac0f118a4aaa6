#!lua flags=allow-oom
-- heartbeat: register or refresh a worker and append its beat to the heartbeats stream. The first beat (with
-- the static fields) is the registration. Kept to the commands themselves: a beat runs every second on every
-- worker, and each Lua step shows in Redis's CPU.
--
-- KEYS[1]  workers sorted set (consumer, score = last beat, ms)
-- KEYS[2]  the worker's record hash
-- KEYS[3]  heartbeats stream
-- ARGV[1]  consumer name
-- ARGV[2]  now, ms since the Unix epoch; 0 = the Redis server's clock (so hosts with skewed clocks agree)
-- ARGV[3]  heartbeats stream MAXLEN (approximate)
-- ARGV[4]  record TTL, ms (a record outlives its last beat this long, then it is gone)
-- ARGV[5]  crash threshold, ms: workers whose last beat is older than this are listed in the reply (0 = none)
-- ARGV[6]  k: how many of the pairs below also go on the heartbeats stream (they come first)
-- ARGV[7..] field, value pairs for the record: first the k per-beat ones (status, reason, in_flight, processed,
--           failed, lease_failures), then the record-only ones of every beat (running), then on registration
--           host, pid, queue, concurrency, version, started_ms, capabilities, meta:*
--
-- Returns {heartbeat entry id, new, crashed}: new is how many record fields this beat created. A beat that sent
-- only the per-beat fields and gets new > 0 found no record (it was lost with Redis's data, or removed when the
-- worker was judged crashed): the worker then sends the static fields again with its next beat. crashed lists up
-- to 8 other workers silent past the crash threshold (oldest beat first), for the caller to adopt their jobs
-- (adopt.lua checks again): the beat's clock judges them, so recovery needs no round trip of its own.
local workers, record, beats = KEYS[1], KEYS[2], KEYS[3]
local consumer, now, maxlen, ttl, crash_after, k = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
  tonumber(ARGV[6])
if now == '0' then
  local t = redis.call('TIME')
  now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
end
local new = redis.call('HSET', record, 'last_beat_ms', now, unpack(ARGV, 7))
redis.call('PEXPIRE', record, ttl)
redis.call('ZADD', workers, now, consumer)
local crashed = {}
if crash_after > 0 then
  -- After this beat's own score: the caller is never among them.
  crashed = redis.call('ZRANGEBYSCORE', workers, '-inf', string.format('%.0f', now - crash_after - 1), 'LIMIT', 0, 8)
end
local id = redis.call('XADD', beats, 'MAXLEN', '~', maxlen, '*', 'worker', consumer, 'ms', now,
  unpack(ARGV, 7, 6 + 2 * k))
return {id, new, crashed}
