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
-- lib/lanes: a queue's priority levels (SPEC §6g). Level 0 is the ready stream, level p >= 1 the stream
-- `<P>:ready:<p>`; a script that routes or finds jobs by level takes the priorities hash and the streams of levels
-- 1..15 as its last KEYS (a caller that passes none gets level 0 only, as before priorities).
-- lanes(ready, first) -> {level 0 stream, level 1 stream, ...}: the hash at KEYS[first] says how many (`levels`,
--   1 when unset), the streams follow it
local function lanes(ready, first)
  local out = {ready}
  local conf = KEYS[first]
  if not conf then return out end
  local n = tonumber(redis.call('HGET', conf, 'levels')) or 1
  for p = 1, n - 1 do
    local k = KEYS[first + p]
    if not k then break end
    out[#out + 1] = k
  end
  return out
end
-- own_id(stream, eid) -> the job id of an entry without an `id` field on `stream`: its entry id on the ready stream,
--   `<entry id>@<p>` on the stream of level p (named `<P>:ready:<p>`), since entry ids repeat across levels
local function own_id(stream, eid)
  local p = string.match(stream, ':ready:(%d+)$')
  if p then return eid .. '@' .. p end
  return eid
end
-- entry_of(jid) -> the entry id an unnamed job's id holds (`<ms>-<seq>`, or `<ms>-<seq>@<p>` above level 0), or jid
local function entry_of(jid)
  return string.match(jid, '^(%d+%-%d+)@%d+$') or jid
end
-- level_of(fields) -> the entry's `priority` field as a level (0 when absent or not a number)
local function level_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'priority' then return math.max(0, math.floor(tonumber(fields[i + 1]) or 0)) end
  end
  return 0
end
-- lane_of(ls, fields) -> the stream an entry goes back to: its level's, or the last level's when it names a level
--   the queue no longer has
local function lane_of(ls, fields)
  return ls[math.min(level_of(fields), #ls - 1) + 1]
end
-- locate(ls, eid, jid) -> the stream holding entry `eid` of job `jid`, the entry's fields and its level, or nil.
--   Entry ids repeat across streams, so the entry's job id (its `id` field, else the entry id) must be `jid`.
local function locate(ls, eid, jid)
  if not string.match(eid, '^%d+%-%d+$') then return nil end
  for level, s in ipairs(ls) do
    local r = redis.call('XRANGE', s, eid, eid)
    if r[1] then
      local id, f = nil, r[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'id' then id = f[i + 1] end
      end
      id = id or own_id(s, eid)
      if id == jid then return s, f, level - 1 end
    end
  end
  return nil
end
-- lib/keyed: per-key limits and fair share (SPEC §6h). A job's key is the value of the entry field the queue's
-- limit hash names in `key_field` (an `x-*` header such as `x-tenant`). Each key may start at most `key_rate`
-- jobs per `key_period_ms` and run at most `key_concurrency` at once. An entry read while its key has no room
-- (or while older jobs of its key are held) is *held*: acked where it lies (the entry stays on its stream, so its
-- id, index entry and job id are unchanged) and listed, in order, under its key; keys with held jobs take turns.
-- Every structure is a sorted set under the queue's hash tag, keyed inside by `<len>:<key>\0` so no key value
-- (any bytes) can run into another's range:
--   held     member = address (entry id on the ready stream, `<entry id>@<p>` on level p), score = its ms
--   ring     member = key with held jobs, score = its turn (lowest = served longest ago)
--   queued   score 0, member = `<len>:<key>\0<seq, 16 digits>\0<address>`: each key's held jobs, oldest first
--   running  score 0, member = `<len>:<key>\0<address>`: jobs handed out per key (finished ones are pruned when
--            the key looks full, and by sampling)
--   kstarts  score 0, member = `<len>:<key>\0<ms, 15 digits>:<seq>`: starts per key in the current window
-- Needs lib/lanes (own_id).

-- key_prefix(k) -> the member prefix of key k, and the exclusive upper bound of its range
local function key_prefix(k)
  local p = #k .. ':' .. k
  return p .. '\0', '(' .. p .. '\1'
end

-- key_of(fields, field) -> the entry's key, or nil (no such field, or empty)
local function key_of(fields, field)
  for i = 1, #fields, 2 do
    if fields[i] == field then
      local v = fields[i + 1]
      if v ~= '' then return v end
      return nil
    end
  end
  return nil
end

-- address_stream(address, by_level) -> stream, entry id of an address, or nil when its level is not given
local function address_stream(address, by_level)
  local eid, p = string.match(address, '^(%d+%-%d+)@(%d+)$')
  if not eid then eid, p = address, '0' end
  return by_level[tonumber(p)], eid
end

-- A call's view of the per-key limits: conf = {field, rate, period, cap}, now (ms), the keys, the group.
local function keyed_limits(conf, now, keys, group, by_level)
  local self = {full = {}, wake = nil}
  local held, ring, queued, running, kstarts = keys[1], keys[2], keys[3], keys[4], keys[5]
  local rate, period, cap = conf.rate, conf.period, conf.cap

  local function pending(address)
    local s, eid = address_stream(address, by_level)
    if not s then return true end -- a level this call cannot see: assume it still runs
    local p = redis.pcall('XPENDING', s, group, eid, eid, 1)
    return type(p) == 'table' and p[1] ~= nil
  end

  -- room(k) -> true if key k may start one more job now (records why not: full[k], and the rate's wake time)
  function self.room(k)
    if self.full[k] then return false end
    local lo, hi = key_prefix(k)
    if rate then
      redis.call('ZREMRANGEBYLEX', kstarts, '[' .. lo, '(' .. lo .. string.format('%015.0f', now - period + 1))
      if redis.call('ZLEXCOUNT', kstarts, '[' .. lo, hi) >= rate then
        local oldest = redis.call('ZRANGEBYLEX', kstarts, '[' .. lo, hi, 'LIMIT', 0, 1)[1]
        local at = tonumber(string.sub(oldest, #lo + 1, #lo + 15)) or now
        local wake = math.max(1, at + period - now)
        if not self.wake or wake < self.wake then self.wake = wake end
        self.full[k] = true
        return false
      end
    end
    if cap then
      local n = redis.call('ZLEXCOUNT', running, '[' .. lo, hi)
      if n >= cap then
        for _, m in ipairs(redis.call('ZRANGEBYLEX', running, '[' .. lo, hi)) do
          if not pending(string.sub(m, #lo + 1)) then
            redis.call('ZREM', running, m)
            n = n - 1
          end
        end
        if n >= cap then
          self.full[k] = true
          return false
        end
      end
    end
    return true
  end

  -- started(k, address): counts a job of key k handed out now
  function self.started(k, address)
    local lo = key_prefix(k)
    if rate then
      local seq = redis.call('HINCRBY', keys.limit, 'kseq', 1)
      redis.call('ZADD', kstarts, 0, lo .. string.format('%015.0f', now) .. ':' .. seq)
      redis.call('PEXPIRE', kstarts, period)
    end
    if cap then redis.call('ZADD', running, 0, lo .. address) end
  end

  -- waits(k) -> true if key k has held jobs (a new job of it queues behind them)
  function self.waits(k)
    return redis.call('ZSCORE', ring, k) ~= false
  end

  -- hold(k, stream, eid): sets a read entry aside under key k
  function self.hold(k, stream, eid)
    local address = own_id(stream, eid)
    redis.call('XACK', stream, group, eid)
    redis.call('ZADD', held, tonumber(string.match(eid, '^(%d+)')), address)
    local seq = redis.call('HINCRBY', keys.limit, 'hseq', 1)
    redis.call('ZADD', queued, 0, key_prefix(k) .. string.format('%016d', seq) .. '\0' .. address)
    if not self.waits(k) then
      redis.call('ZADD', ring, redis.call('HINCRBY', keys.limit, 'turn', 1), k)
    end
  end

  -- take(k) -> stream, entry id of key k's oldest held job (removed from the lists), or nil when it has none;
  --   the key leaves the ring with its last held job
  function self.take(k)
    local lo, hi = key_prefix(k)
    local m = redis.call('ZRANGEBYLEX', queued, '[' .. lo, hi, 'LIMIT', 0, 2)
    if not m[1] then
      redis.call('ZREM', ring, k)
      return nil
    end
    redis.call('ZREM', queued, m[1])
    if not m[2] then redis.call('ZREM', ring, k) end
    local address = string.sub(m[1], #lo + 18)
    redis.call('ZREM', held, address)
    local s, eid = address_stream(address, by_level)
    return s, eid, address
  end

  -- served(k): key k goes to the back of the ring (if it is still there)
  function self.served(k)
    redis.call('ZADD', ring, 'XX', redis.call('HINCRBY', keys.limit, 'turn', 1), k)
  end

  -- sweep(): drops up to two finished jobs or expired starts of any key (keys not seen again leave some)
  function self.sweep()
    if cap then
      for _, m in ipairs(redis.call('ZRANDMEMBER', running, 2)) do
        local len = tonumber(string.match(m, '^(%d+):'))
        if len and not pending(string.sub(m, #tostring(len) + 3 + len)) then redis.call('ZREM', running, m) end
      end
    end
    if rate then
      for _, m in ipairs(redis.call('ZRANDMEMBER', kstarts, 2)) do
        local len = tonumber(string.match(m, '^(%d+):'))
        if len then
          local at = tonumber(string.sub(m, #tostring(len) + 3 + len, #tostring(len) + 2 + len + 15))
          if at and at <= now - period then redis.call('ZREM', kstarts, m) end
        end
      end
    end
  end

  return self
end

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
  local by_level = {}
  for _, s in ipairs(streams) do
    by_level[tonumber(string.match(s, ':ready:(%d+)$') or '0')] = s
  end
  local keys = {KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], limit = limit}
  local kl = keyed_limits(kconf, now, keys, group, by_level)
  kl.sweep()
  -- Keys with held jobs first, one job per key per round, least recently served first.
  local turn = redis.call('ZRANGE', KEYS[6], 0, 63)
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
          kl.started(k, own_id(s, e[1]))
        end
      end
    end
    if total >= n or scanned >= budget then break end
  end
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
