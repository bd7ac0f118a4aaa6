#!lua flags=allow-oom
-- limit: reads new entries for a worker under the queue's limits, across every worker, on the Redis server's
-- clock, in one atomic step (so nothing is granted that is not read, and nothing read that is not counted):
--   rate         at most `rate` starts in any window of `period_ms`
--   concurrency  at most `concurrency` jobs handed out and not yet finished (the group's pending entries)
-- The window's starts are a sorted set, one member per read (`<seq>:<count>`, score = when), with their sum in the
-- hash's `used`: the rule is exact, bursts up to the rate are allowed, and the cost is per read, not per job.
--
-- Per-key limits (lib/keyed, SPEC §6h), when the hash names a `key_field`: keys with held jobs are served first,
-- one job per key per turn, least recently served first; then new entries are read, and one whose key has no room
-- (or has held jobs) is held instead of handed out, up to a scan budget per call.
--
-- KEYS[1]  limit hash (rate, period_ms, concurrency; key_field, key_rate, key_period_ms, key_concurrency; seq,
--          used, kseq, hseq and turn kept here; without any of rate + period_ms, concurrency and key_field: no
--          limit)
-- KEYS[2]  starts sorted set (member = '<seq>:<count>', score = its time, ms; expires after a quiet window,
--          which resets `used`)
-- KEYS[3]  the first stream to read: the ready stream, or (a queue with priority levels, section 6g) the stream
--          of the level to read first
-- KEYS[4]  events stream (when the concurrency is used up: its newest id is returned)
-- KEYS[5]  held sorted set (per-key limits: entries set aside, see lib/keyed)
-- KEYS[6]  key ring sorted set (keys with held jobs, score = turn)
-- KEYS[7]  queued sorted set (each key's held jobs, in order)
-- KEYS[8]  running sorted set (jobs handed out per key)
-- KEYS[9]  key starts sorted set (starts per key in the window)
-- KEYS[10..] the other level streams, in the order to read them after KEYS[3] (each is read only while fewer
--          entries than allowed were found; the pending entries of every stream count against `concurrency`)
-- ARGV[1]  consumer group
-- ARGV[2]  consumer
-- ARGV[3]  most entries wanted
--
-- Returns {limited, read, wait, after}:
--   limited  0 without any limit: nothing read or recorded (read as usual); else 1
--   read     the entries handed to the consumer, as XREADGROUP gives them: {{stream, {{id, {field, value, ...}},
--            ...}}, ...}, at most the number allowed now in all; each counts as a start. A held entry handed
--            out is claimed for the consumer with delivery count 1.
--   wait     with none read: 'rate' (no start allowed: retry after `after` ms), 'room' (the concurrency is used
--            up: a job ending writes an event after the events stream id `after`, '0-0' if empty), 'entries'
--            (none waiting: `after` is an array with each stream's newest id ('0-0' if empty), KEYS[3] first,
--            then KEYS[10..]: new entries come after them), 'keys' (per-key limits: every key with held jobs is
--            out of room and no new entry could start: `after` = {the events stream's newest id, then each
--            stream's newest id as for 'entries', then ms until a key's rate allows a start ('0': none waits on
--            a rate)}) or 'again' (the scan budget went on holding entries: call again at once); '' when entries
--            were read
--- @include "lib/lanes"
--- @include "lib/keyed"

local limit, starts, ready, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local conf = redis.call('HMGET', limit, 'rate', 'period_ms', 'used', 'concurrency', 'key_field', 'key_rate',
  'key_period_ms', 'key_concurrency')
local rate, period, cap = tonumber(conf[1]), tonumber(conf[2]), tonumber(conf[4])
if not rate or not period or rate < 1 or period < 1 then rate = nil end
if cap and cap < 1 then cap = nil end
local field = conf[5]
if field == false or field == '' then field = nil end
local keyed = field or redis.call('ZCARD', KEYS[5]) > 0 -- held jobs flow out after the per-key limits go
if not rate and not cap and not keyed then return {0, {}, '', ''} end
local streams = {ready}
for k = 10, #KEYS do streams[#streams + 1] = KEYS[k] end
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
local read, total, at = {}, 0, {}
local function give(stream, entry)
  if not at[stream] then
    read[#read + 1] = {stream, {}}
    at[stream] = #read
  end
  local list = read[at[stream]][2]
  list[#list + 1] = entry
  total = total + 1
end
local scanned, budget = 0, math.max(64, 4 * want)
if keyed then
  local kconf = {rate = tonumber(conf[6]), period = tonumber(conf[7]), cap = tonumber(conf[8])}
  if not kconf.rate or not kconf.period or kconf.rate < 1 or kconf.period < 1 then kconf.rate = nil end
  if kconf.cap and kconf.cap < 1 then kconf.cap = nil end
  local by_level, suffix = {}, {} -- a stream by its level; what an entry id on it gets for its address
  for _, s in ipairs(streams) do
    local p = string.match(s, ':ready:(%d+)$')
    by_level[tonumber(p or '0')] = s
    if p then suffix[s] = '@' .. p end
  end
  local keys = {KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], limit = limit}
  local kl = keyed_limits(kconf, now, keys, group, by_level)
  kl.sweep()
  -- Keys with held jobs first, one job per key per round, least recently served first.
  local turn = redis.call('ZRANGE', KEYS[6], 0, 63)
  if #turn < 64 then kl.knows_ring(turn) end
  local progress = true
  while total < n and progress do
    progress = false
    for _, k in ipairs(turn) do
      if total >= n then break end
      if kl.room(k) then
        local s, eid, address = kl.take(k)
        if s then
          progress = true
          local e = redis.call('XCLAIM', s, group, consumer, 0, eid, 'RETRYCOUNT', 1, 'FORCE')
          if e[1] and e[1][2] then
            give(s, e[1])
            kl.started(k, address)
            kl.served(k)
          end
        elseif eid then
          progress = true -- its level is gone: dropped from the lists
        end
      end
    end
  end
  -- Then new entries: handed out while their key has room, else held.
  for _, s in ipairs(streams) do
    while total < n and scanned < budget do
      local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', math.min(n - total, budget - scanned),
        'STREAMS', s, '>')
      if not (got and got[1] and #got[1][2] > 0) then break end
      for _, e in ipairs(got[1][2]) do
        scanned = scanned + 1
        local k = field and e[2] and key_of(e[2], field)
        if not k then
          give(s, e)
        elseif kl.waits(k) or not kl.room(k) then
          kl.hold(k, s, e[1])
        else
          give(s, e)
          kl.started(k, suffix[s] and e[1] .. suffix[s] or e[1])
        end
      end
    end
    if total >= n or scanned >= budget then break end
  end
  kl.flush()
  if total == 0 then
    if scanned >= budget then return {1, {}, 'again', ''} end
    if redis.call('ZCARD', KEYS[6]) > 0 then
      local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
      local after = {'0-0'}
      if last[1] then after[1] = last[1][1] end
      for i, s in ipairs(streams) do
        local l = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
        after[i + 1] = '0-0'
        if l[1] then after[i + 1] = l[1][1] end
      end
      after[#after + 1] = tostring(kl.wake or 0)
      return {1, {}, 'keys', after}
    end
  end
else
  for _, s in ipairs(streams) do
    if total >= n then break end
    local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n - total, 'STREAMS', s, '>')
    if got and got[1] and #got[1][2] > 0 then
      read[#read + 1] = got[1]
      total = total + #got[1][2]
    end
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
