#!lua flags=allow-oom
-- limit: grants starts under the queue's rate limit (at most `rate` starts in any window of `period_ms`, across
-- every worker, on the Redis server's clock), and takes back grants a caller did not use. A caller takes a grant
-- of k, reads at most k new entries itself (XREADGROUP COUNT k), and returns what it did not read, so the window
-- counts only jobs handed out. The window's grants are a sorted set, one member per grant (`<seq>:<count>`, score
-- = when), with their sum in the hash's `used`: the rule is exact, bursts up to the rate are allowed, and the
-- cost is per grant, not per job.
--
-- KEYS[1]  limit hash (rate, period_ms; seq and used kept here; without rate and period_ms: no limit)
-- KEYS[2]  grants sorted set (member = '<seq>:<count>', score = its time, ms; expires after a quiet window,
--          which resets `used`)
-- ARGV[1]  'take' or 'return'
-- ARGV[2]  take: most starts wanted; return: the grant's member
-- ARGV[3]  return: how many of that grant went unused
--
-- Returns {granted, wait_ms, member, limited}:
--   take     granted = starts the caller may make now (under the member it must return unused ones to);
--            wait_ms = with none granted, how long until one is allowed again; limited = 0 without a limit
--            (then nothing is granted or recorded: read as usual)
--   return   {0, 0, '', 1} (a member no longer in the window is ignored)
local limit, starts = KEYS[1], KEYS[2]
if ARGV[1] == 'return' then
  local member, unused = ARGV[2], tonumber(ARGV[3])
  local score = redis.call('ZSCORE', starts, member)
  if score and unused > 0 then
    local seq, count = string.match(member, '^(%d+):(%d+)$')
    local left = tonumber(count) - unused
    redis.call('ZREM', starts, member)
    if left > 0 then redis.call('ZADD', starts, score, seq .. ':' .. left) end
    redis.call('HINCRBY', limit, 'used', -math.min(unused, tonumber(count)))
  end
  return {0, 0, '', 1}
end
local want = tonumber(ARGV[2])
local conf = redis.call('HMGET', limit, 'rate', 'period_ms', 'used')
local rate, period = tonumber(conf[1]), tonumber(conf[2])
if not rate or not period or rate < 1 or period < 1 then return {want, 0, '', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = 0
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
end
local granted = math.min(want, rate - used)
if granted < 1 then
  local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
  local wait = 1
  if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + period - now) end
  redis.call('HSET', limit, 'used', used)
  return {0, wait, '', 1}
end
local member = redis.call('HINCRBY', limit, 'seq', 1) .. ':' .. granted
redis.call('HSET', limit, 'used', used + granted)
redis.call('ZADD', starts, now, member)
redis.call('PEXPIRE', starts, period)
return {granted, 0, member, 1}
