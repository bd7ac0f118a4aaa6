#!lua flags=allow-oom
-- limit: reads new entries for a worker under the queue's limits, across every worker, on the Redis server's
-- clock, in one atomic step (so nothing is granted that is not read, and nothing read that is not counted):
--   rate         at most `rate` starts in any window of `period_ms`
--   concurrency  at most `concurrency` jobs handed out and not yet finished (the group's pending entries)
-- The window's starts are a sorted set, one member per read (`<seq>:<count>`, score = when), with their sum in the
-- hash's `used`: the rule is exact, bursts up to the rate are allowed, and the cost is per read, not per job.
--
-- KEYS[1]  limit hash (rate, period_ms, concurrency; seq and used kept here; without rate and period_ms and
--          without concurrency: no limit)
-- KEYS[2]  starts sorted set (member = '<seq>:<count>', score = its time, ms; expires after a quiet window,
--          which resets `used`)
-- KEYS[3]  the first stream to read: the ready stream, or (a queue with priority levels, section 6g) the stream
--          of the level to read first
-- KEYS[4]  events stream (when the concurrency is used up: its newest id is returned)
-- KEYS[5..] the other level streams, in the order to read them after KEYS[3] (each is read only while fewer
--          entries than allowed were found; the pending entries of every stream count against `concurrency`)
-- ARGV[1]  consumer group
-- ARGV[2]  consumer
-- ARGV[3]  most entries wanted
--
-- Returns {limited, read, wait, after}:
--   limited  0 without any limit: nothing read or recorded (read as usual); else 1
--   read     the entries read for the consumer, as XREADGROUP gives them: {{stream, {{id, {field, value, ...}},
--            ...}}, ...}, at most the number allowed now in all; each counts as a start
--   wait     with none read: 'rate' (no start allowed: retry after `after` ms), 'room' (the concurrency is used
--            up: a job ending writes an event after the events stream id `after`, '0-0' if empty) or 'entries'
--            (none waiting: `after` is an array with each stream's newest id ('0-0' if empty), KEYS[3] first,
--            then KEYS[5..]: new entries come after them); '' when entries were read
local limit, starts, ready, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local conf = redis.call('HMGET', limit, 'rate', 'period_ms', 'used', 'concurrency')
local rate, period, cap = tonumber(conf[1]), tonumber(conf[2]), tonumber(conf[4])
if not rate or not period or rate < 1 or period < 1 then rate = nil end
if cap and cap < 1 then cap = nil end
if not rate and not cap then return {0, {}, '', ''} end
local streams = {ready}
for k = 5, #KEYS do streams[#streams + 1] = KEYS[k] end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = want
local used = 0
if rate then
  if redis.call('EXISTS', starts) == 1 then
    used = tonumber(conf[3]) or 0
    local cutoff = '(' .. string.format('%.0f', now - period + 1)
    local expired = redis.call('ZRANGEBYSCORE', starts, '-inf', cutoff)
    if #expired > 0 then
      local gone = 0
      for _, m in ipairs(expired) do
        gone = gone + (tonumber(string.match(m, ':(%d+)$')) or 0)
      end
      redis.call('ZREMRANGEBYSCORE', starts, '-inf', cutoff)
      used = used - gone
      redis.call('HSET', limit, 'used', used)
    end
  end
  n = math.min(n, rate - used)
  if n < 1 then
    local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
    local wait = 1
    if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + period - now) end
    return {1, {}, 'rate', tostring(wait)}
  end
end
if cap then
  local pending = 0
  for _, s in ipairs(streams) do
    local p = redis.pcall('XPENDING', s, group)
    if type(p) == 'table' and not p.err then pending = pending + (tonumber(p[1]) or 0) end
  end
  n = math.min(n, cap - pending)
  if n < 1 then
    local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
    local after = '0-0'
    if last[1] then after = last[1][1] end
    return {1, {}, 'room', after}
  end
end
local read, total = {}, 0
for _, s in ipairs(streams) do
  if total >= n then break end
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n - total, 'STREAMS', s, '>')
  if got and got[1] and #got[1][2] > 0 then
    read[#read + 1] = got[1]
    total = total + #got[1][2]
  end
end
if total == 0 then
  local after = {}
  for i, s in ipairs(streams) do
    local last = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
    after[i] = '0-0'
    if last[1] then after[i] = last[1][1] end
  end
  return {1, {}, 'entries', after}
end
if rate then
  local member = redis.call('HINCRBY', limit, 'seq', 1) .. ':' .. total
  redis.call('HSET', limit, 'used', used + total)
  redis.call('ZADD', starts, now, member)
  redis.call('PEXPIRE', starts, period)
end
return {1, read, '', ''}
