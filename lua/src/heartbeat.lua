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
-- ARGV[5]  k: how many of the pairs below also go on the heartbeats stream (they come first)
-- ARGV[6..] field, value pairs for the record: first the k per-beat ones (status, reason, in_flight, processed,
--           failed, lease_failures), then the record-only ones of every beat (running), then on registration
--           host, pid, queue, concurrency, version, started_ms, capabilities, meta:*
--
-- Returns {heartbeat entry id, new}: new is how many record fields this beat created. A beat that sent only the
-- per-beat fields and gets new > 0 found no record (it was lost with Redis's data, or removed when the worker
-- was judged crashed): the worker then sends the static fields again with its next beat.
local workers, record, beats = KEYS[1], KEYS[2], KEYS[3]
local consumer, now, maxlen, ttl, k = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if now == '0' then
  local t = redis.call('TIME')
  now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
end
local new = redis.call('HSET', record, 'last_beat_ms', now, unpack(ARGV, 6))
redis.call('PEXPIRE', record, ttl)
redis.call('ZADD', workers, now, consumer)
local id = redis.call('XADD', beats, 'MAXLEN', '~', maxlen, '*', 'worker', consumer, 'ms', now,
  unpack(ARGV, 6, 5 + 2 * k))
return {id, new}
