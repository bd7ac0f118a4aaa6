#!lua flags=allow-oom
-- limit: read new jobs for a consumer under the queue's rate limit: at most `rate` starts in any window of
-- `period_ms`, across every worker, on the Redis server's clock. It reads (XREADGROUP, not blocking) at most as
-- many entries as the limit allows now and records a start for each entry read, in one step, so the count is
-- exact: a start is recorded only for a job handed out, at the time it was handed out. The starts of the last
-- window are a sorted set, one member per call that handed out jobs (`<seq>:<count>`, score = when), with their sum
-- in the hash's `used`, so the rule is exact, bursts up to the rate are allowed, and the cost is per call.
--
-- KEYS[1]  limit hash (rate, period_ms; seq and used kept here; without rate and period_ms: no limit)
-- KEYS[2]  starts sorted set (member = '<seq>:<count>' per call, score = its time, ms; expires after a quiet
--          window, which resets `used`)
-- KEYS[3]  ready stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  want: most entries to read
--
-- Returns {entries, wait_ms, last_delivered, limited}:
--   entries         the XREADGROUP reply's entries ({id, fields} each; empty if none)
--   wait_ms         with nothing read because of the limit: how long until a start is allowed again; else 0
--   last_delivered  with nothing read: the group's last-delivered id, to block on new entries after it (XREAD)
--                   before calling again ('' when entries were read)
--   limited         1 if the queue has a limit, 0 if not (then nothing was read: read as usual)
--- @include "lib/last_delivered"
local limit, starts, ready = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local conf = redis.call('HMGET', limit, 'rate', 'period_ms')
local rate, period = tonumber(conf[1]), tonumber(conf[2])
if not rate or not period or rate < 1 or period < 1 then return {{}, 0, '0-0', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The window's starts, one member per call that handed some out ('<seq>:<count>'), and their sum in `used`.
local used = 0
if redis.call('EXISTS', starts) == 1 then
  local cutoff = '(' .. string.format('%.0f', now - period + 1)
  local expired = redis.call('ZRANGEBYSCORE', starts, '-inf', cutoff)
  local gone = 0
  for _, m in ipairs(expired) do
    gone = gone + (tonumber(string.match(m, ':(%d+)$')) or 0)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', starts, '-inf', cutoff) end
  if gone > 0 then
    used = redis.call('HINCRBY', limit, 'used', -gone)
  else
    used = tonumber(redis.call('HGET', limit, 'used')) or 0
  end
end
local room = math.min(want, rate - used)
if room < 1 then
  local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
  local wait = 1
  if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + period - now) end
  return {{}, wait, last_delivered(ready, group), 1}
end
local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', room, 'STREAMS', ready, '>')
local entries = {}
if got and got[1] then entries = got[1][2] end
if #entries > 0 then
  local seq = redis.call('HINCRBY', limit, 'seq', 1)
  if used == 0 then
    -- A new window (the set expired or emptied): the sum starts again.
    redis.call('HSET', limit, 'used', #entries)
  else
    redis.call('HINCRBY', limit, 'used', #entries)
  end
  redis.call('ZADD', starts, now, seq .. ':' .. #entries)
  redis.call('PEXPIRE', starts, period)
end
-- Only a caller that got nothing blocks, so only it needs the group's position.
if #entries > 0 then return {entries, 0, '', 1} end
return {entries, 0, last_delivered(ready, group), 1}
