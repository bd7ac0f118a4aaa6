#!lua flags=allow-oom
-- heartbeat: register or refresh a worker and append its beat to the heartbeats stream. The first beat (with
-- the static fields) is the registration.
--
-- KEYS[1]  workers sorted set (consumer, score = last beat, ms)
-- KEYS[2]  the worker's record hash
-- KEYS[3]  heartbeats stream
-- ARGV[1]  consumer name
-- ARGV[2]  now, ms since the Unix epoch; 0 = the Redis server's clock (so hosts with skewed clocks agree)
-- ARGV[3]  heartbeats stream MAXLEN (approximate)
-- ARGV[4]  record TTL, ms (a record outlives its last beat this long, then it is gone)
-- ARGV[5..] field, value pairs for the record: status, in_flight, processed, failed, lease_failures, and on
--           registration host, pid, queue, concurrency, version, started_ms, metadata, capabilities
--
-- Returns {heartbeat entry id, registered}: registered is 1 when the record holds the static fields (`host` among
-- them), 0 when it lacks them (it was lost with Redis's data, or removed when the worker was judged crashed): the
-- worker then sends them again with its next beat.
local workers, record, beats = KEYS[1], KEYS[2], KEYS[3]
local consumer, now, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if now == '0' then
  local t = redis.call('TIME')
  now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local fields = {'last_beat_ms', now}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', record, unpack(fields))
redis.call('PEXPIRE', record, ttl)
redis.call('ZADD', workers, now, consumer)
local beat = {'worker', consumer, 'ms', now}
for i = 5, #ARGV, 2 do
  local f = ARGV[i]
  if f == 'status' or f == 'in_flight' or f == 'processed' or f == 'failed' or f == 'lease_failures' then
    beat[#beat + 1] = f
    beat[#beat + 1] = ARGV[i + 1]
  end
end
local id = redis.call('XADD', beats, 'MAXLEN', '~', maxlen, '*', unpack(beat))
return {id, redis.call('HEXISTS', record, 'host')}
