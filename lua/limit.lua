#!lua flags=allow-oom
-- limit: grants starts under the queue's limits, across every worker, on the Redis server's clock, and takes back
-- what a caller did not use. Two limits, either or both:
--   rate         at most `rate` starts in any window of `period_ms`
--   concurrency  at most `concurrency` jobs handed out and not yet finished: the group's pending entries, plus
--                grants being read right now (a hold per grant, until the caller returns it)
-- A caller takes a grant of k, reads at most k new entries itself (XREADGROUP COUNT k), and returns the grant
-- with what it did not read, so the rate window counts only jobs handed out and the hold ends as the entries
-- become pending. The window's grants are a sorted set, one member per grant (`<seq>:<count>`, score = when),
-- with their sum in the hash's `used`: the rule is exact, bursts up to the rate are allowed, and the cost is per
-- grant, not per job. A hold lapses after 5 s, so a caller that dies mid-read blocks nobody for long.
--
-- KEYS[1]  limit hash (rate, period_ms, concurrency; seq and used kept here; without rate and period_ms and
--          without concurrency: no limit)
-- KEYS[2]  grants sorted set (member = '<seq>:<count>', score = its time, ms; expires after a quiet window,
--          which resets `used`)
-- KEYS[3]  holds sorted set (member = a grant's '<seq>:<count>', score = when the hold lapses, ms)
-- KEYS[4]  ready stream (its group's pending entries count against `concurrency`)
-- KEYS[5]  events stream (take, when the concurrency is used up: its newest id is returned)
-- ARGV[1]  'take' or 'return'
-- ARGV[2]  take: most starts wanted; return: the grant's member
-- ARGV[3]  take: the consumer group; return: how many of that grant went unused
--
-- Returns {granted, wait_ms, member, limited, capped, after}:
--   take     granted = starts the caller may make now (under the member it must return, with unused ones);
--            wait_ms = with none granted because of the rate, how long until a start is allowed again;
--            limited = 0 without any limit (then nothing is granted or recorded: read as usual);
--            capped = 1 when the queue has a concurrency limit (the grant must always be returned);
--            after = with none granted because of the concurrency, the events stream's newest id ('0-0' if
--            empty): wait for an event after it (a job ending) before taking again; '' otherwise
--   return   {0, 0, '', 1, 0, ''} (a member no longer held or in the window is ignored)
local limit, starts, holds, ready, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[1] == 'return' then
  local member, unused = ARGV[2], tonumber(ARGV[3])
  redis.call('ZREM', holds, member)
  local score = redis.call('ZSCORE', starts, member)
  if score and unused > 0 then
    local seq, count = string.match(member, '^(%d+):(%d+)$')
    local left = tonumber(count) - unused
    redis.call('ZREM', starts, member)
    if left > 0 then redis.call('ZADD', starts, score, seq .. ':' .. left) end
    redis.call('HINCRBY', limit, 'used', -math.min(unused, tonumber(count)))
  end
  return {0, 0, '', 1, 0, ''}
end
local want, group = tonumber(ARGV[2]), ARGV[3]
local conf = redis.call('HMGET', limit, 'rate', 'period_ms', 'used', 'concurrency')
local rate, period, cap = tonumber(conf[1]), tonumber(conf[2]), tonumber(conf[4])
if not rate or not period or rate < 1 or period < 1 then rate = nil end
if cap and cap < 1 then cap = nil end
if not rate and not cap then return {want, 0, '', 0, 0, ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local granted = want
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
    end
    redis.call('HSET', limit, 'used', used)
  end
  granted = math.min(granted, rate - used)
  if granted < 1 then
    local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
    local wait = 1
    if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + period - now) end
    return {0, wait, '', 1, cap and 1 or 0, ''}
  end
end
if cap then
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', string.format('%.0f', now))
  local held = 0
  for _, m in ipairs(redis.call('ZRANGE', holds, 0, -1)) do
    held = held + (tonumber(string.match(m, ':(%d+)$')) or 0)
  end
  local pending = 0
  local p = redis.pcall('XPENDING', ready, group)
  if type(p) == 'table' and not p.err then pending = tonumber(p[1]) or 0 end
  granted = math.min(granted, cap - pending - held)
  if granted < 1 then
    local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
    local after = '0-0'
    if last[1] then after = last[1][1] end
    return {0, 0, '', 1, 1, after}
  end
end
local member = redis.call('HINCRBY', limit, 'seq', 1) .. ':' .. granted
if rate then
  redis.call('HSET', limit, 'used', used + granted)
  redis.call('ZADD', starts, now, member)
  redis.call('PEXPIRE', starts, period)
end
if cap then
  redis.call('ZADD', holds, now + 5000, member)
  redis.call('PEXPIRE', holds, 10000)
end
return {granted, 0, member, 1, cap and 1 or 0, ''}
