#!lua flags=allow-oom
-- heartbeat: register or refresh a worker and, when its status or counters changed, append its beat to the
-- heartbeats stream. The first beat (with the static fields) is the registration. Kept to the commands
-- themselves: a beat runs every second on every worker, and each Lua step shows in Redis's CPU; a worker sends
-- only what changed since its last beat, so an idle worker's beat is the registry score, `last_beat_ms` and the
-- crash check.
--
-- KEYS[1]  workers sorted set (consumer, score = last beat, ms)
-- KEYS[2]  the worker's record hash
-- KEYS[3]  heartbeats stream
-- ARGV[1]  consumer name
-- ARGV[2]  now, ms since the Unix epoch; 0 = the Redis server's clock (so hosts with skewed clocks agree)
-- ARGV[3]  heartbeats stream MAXLEN (approximate)
-- ARGV[4]  record TTL, ms (a record outlives its last beat this long, then it is gone); 0 = leave the record's
--          expiry as it is (a worker sends it on registration and then now and again: it is long)
-- ARGV[5]  crash threshold, ms: workers whose last beat is older than this are listed in the reply (0 = none)
-- ARGV[6]  k: how many of the pairs below also go on the heartbeats stream (they come first); 0 = add no entry
--          to the stream (nothing it carries changed)
-- ARGV[7..] field, value pairs for the record: first the k per-beat ones (status, reason, in_flight, processed,
--           failed, lease_failures), then record-only ones (running), then on registration host, pid, queue,
--           concurrency, version, started_ms, capabilities, meta:*; a beat may leave out any that did not change
--
-- Returns {heartbeat entry id ('' if none was added), new, crashed}: new is how many record fields this beat
-- created. A beat that sent no static fields and gets new > 0 found no record (it was lost with Redis's data,
-- removed when the worker was judged crashed, or expired): the worker then sends every field again with its
-- next beat. crashed lists up to 8 other workers silent past the crash threshold (oldest beat first), for the
-- caller to adopt their jobs (adopt.lua checks again): the beat's clock judges them, so recovery needs no round
-- trip of its own.
local workers, record, beats = KEYS[1], KEYS[2], KEYS[3]
local consumer, now, maxlen, ttl, crash_after, k = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
  tonumber(ARGV[6])
if now == '0' then
  local t = redis.call('TIME')
  now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
end
local new = redis.call('HSET', record, 'last_beat_ms', now, unpack(ARGV, 7))
if ttl ~= '0' then
  redis.call('PEXPIRE', record, ttl)
end
redis.call('ZADD', workers, now, consumer)
local crashed = {}
if crash_after > 0 then
  -- After this beat's own score: the caller is never among them.
  crashed = redis.call('ZRANGEBYSCORE', workers, '-inf', string.format('%.0f', now - crash_after - 1), 'LIMIT', 0, 8)
end
local id = ''
if k > 0 then
  id = redis.call('XADD', beats, 'MAXLEN', '~', maxlen, '*', 'worker', consumer, 'ms', now, unpack(ARGV, 7, 6 + 2 * k))
end
return {id, new, crashed}
