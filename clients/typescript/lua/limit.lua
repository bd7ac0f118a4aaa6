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

-- A call's view of the per-key limits: conf = {field, rate, period, cap}, now (ms), the keys, the group. What it
-- learns of a key (its counts, whether it has held jobs) is kept for the rest of the call: only this call changes
-- them meanwhile. Sequence numbers take one HINCRBY per call (a base) and count up from it locally.
local function keyed_limits(conf, now, keys, group, by_level)
  local self = {full = {}, wake = nil}
  local held, ring, queued, running, kstarts = keys[1], keys[2], keys[3], keys[4], keys[5]
  local rate, period, cap = conf.rate, conf.period, conf.cap
  local counts, in_ring, seqs = {}, {}, {}
  local adds = {running = {}, kstarts = {}} -- members counted in this call, written at the end (flush)
  local prefixes = {}
  -- prefix(k) -> key_prefix(k), made once per key in the call
  local function prefix(k)
    local p = prefixes[k]
    if not p then
      local lo, hi = key_prefix(k)
      p = {lo, hi}
      prefixes[k] = p
    end
    return p[1], p[2]
  end

  -- next_seq(name) -> a number unique to this queue and growing: (HINCRBY name 1) * 100000 + a count in the call
  local function next_seq(name)
    local q = seqs[name]
    if not q then
      q = {base = redis.call('HINCRBY', keys.limit, name, 1) * 100000, n = 0}
      seqs[name] = q
    end
    q.n = q.n + 1
    return q.base + q.n
  end

  local function pending(address)
    local s, eid = address_stream(address, by_level)
    if not s then return true end -- a level this call cannot see: assume it still runs
    local p = redis.pcall('XPENDING', s, group, eid, eid, 1)
    return type(p) == 'table' and p[1] ~= nil
  end

  -- floor(s) -> the oldest pending entry id of stream s as {ms, seq} (nil: nothing pending), read once per call.
  --   Every entry below it has finished (section 6: a pending entry is never after an undelivered one).
  local floors = {}
  local function floor(s)
    if floors[s] == nil then
      local p = redis.pcall('XPENDING', s, group, '-', '+', 1)
      floors[s] = false
      if type(p) == 'table' and p[1] then
        local ms, sq = string.match(p[1][1], '^(%d+)-(%d+)$')
        floors[s] = {tonumber(ms), tonumber(sq)}
      end
    end
    return floors[s] or nil
  end

  -- done(address) -> true if the entry has finished by the floor alone (cheap), or, with `exact`, by its own
  --   pending entry
  local function done(address, exact)
    local s, eid = address_stream(address, by_level)
    if not s then return false end
    local f = floor(s)
    if not f then return true end
    local ms, sq = string.match(eid, '^(%d+)-(%d+)$')
    ms, sq = tonumber(ms), tonumber(sq)
    if ms < f[1] or (ms == f[1] and sq < f[2]) then return true end
    return exact and not pending(address)
  end

  -- prune(lo, hi, limit) -> how many of key `lo`'s running members finished and were removed: every one,
  --   checked exactly (limit nil), or the oldest `limit`, by the floor only
  local function prune(lo, hi, limit)
    local members
    if limit then
      members = redis.call('ZRANGEBYLEX', running, '[' .. lo, hi, 'LIMIT', 0, limit)
    else
      members = redis.call('ZRANGEBYLEX', running, '[' .. lo, hi)
    end
    local gone = {}
    for _, m in ipairs(members) do
      if done(string.sub(m, #lo + 1), limit == nil) then gone[#gone + 1] = m end
    end
    if #gone > 0 then redis.call('ZREM', running, unpack(gone)) end
    return #gone
  end

  -- room(k) -> true if key k may start one more job now (records why not: full[k], and the rate's wake time)
  function self.room(k)
    if self.full[k] then return false end
    local lo, hi = prefix(k)
    local c = counts[k]
    if not c then
      c = {starts = 0, running = 0}
      if rate then
        redis.call('ZREMRANGEBYLEX', kstarts, '[' .. lo, '(' .. lo .. string.format('%015.0f', now - period + 1))
        c.starts = redis.call('ZLEXCOUNT', kstarts, '[' .. lo, hi)
      end
      if cap then c.running = redis.call('ZLEXCOUNT', running, '[' .. lo, hi) end
      counts[k] = c
    end
    if rate and c.starts >= rate then
      local oldest = redis.call('ZRANGEBYLEX', kstarts, '[' .. lo, hi, 'LIMIT', 0, 1)[1]
      local at = (oldest and tonumber(string.sub(oldest, #lo + 1, #lo + 15))) or now
      local wake = math.max(1, at + period - now)
      if not self.wake or wake < self.wake then self.wake = wake end
      self.full[k] = true
      return false
    end
    -- Looking full: drop the members that finished, checked one by one, once per call (when first found full,
    -- whether at the first look or after this call handed jobs out).
    if cap and c.running >= cap and not c.pruned then
      c.pruned = true
      c.running = c.running - prune(lo, hi, nil)
    end
    if cap and c.running >= cap then
      self.full[k] = true
      return false
    end
    return true
  end

  -- started(k, address): counts a job of key k handed out now (after room(k) said yes). A key with more than 64
  -- jobs counted drops those of its 32 oldest below the floor, so finished ones do not pile up under a
  -- concurrency it never reaches (and at most that concurrency stay while a long job holds the floor).
  function self.started(k, address)
    local lo, hi = prefix(k)
    local c = counts[k]
    if rate then
      local a = adds.kstarts
      a[#a + 1] = 0
      a[#a + 1] = lo .. string.format('%015.0f', now) .. ':' .. next_seq('kseq')
      c.starts = c.starts + 1
    end
    if cap then
      local a = adds.running
      a[#a + 1] = 0
      a[#a + 1] = lo .. address
      c.running = c.running + 1
      if c.running > 64 then c.running = c.running - prune(lo, hi, 32) end
    end
  end

  -- flush(): writes what this call counted (one ZADD per set, in chunks)
  function self.flush()
    for name, key in pairs({running = running, kstarts = kstarts}) do
      local a = adds[name]
      for i = 1, #a, 2000 do
        redis.call('ZADD', key, unpack(a, i, math.min(i + 1999, #a)))
      end
    end
    if #adds.kstarts > 0 then redis.call('PEXPIRE', kstarts, period) end
  end

  -- knows_ring(members): the ring's members, all of them: waits() needs no lookups
  function self.knows_ring(members)
    for _, k in ipairs(members) do in_ring[k] = true end
    self.ring_known = true
  end

  -- waits(k) -> true if key k has held jobs (a new job of it queues behind them)
  function self.waits(k)
    if in_ring[k] == nil then
      if self.ring_known then return false end
      in_ring[k] = redis.call('ZSCORE', ring, k) ~= false
    end
    return in_ring[k]
  end

  -- hold(k, stream, eid): sets a read entry aside under key k
  function self.hold(k, stream, eid)
    local address = own_id(stream, eid)
    redis.call('XACK', stream, group, eid)
    redis.call('ZADD', held, tonumber(string.match(eid, '^(%d+)')), address)
    redis.call('ZADD', queued, 0, prefix(k) .. string.format('%016.0f', next_seq('hseq')) .. '\0' .. address)
    if not self.waits(k) then
      redis.call('ZADD', ring, next_seq('turn'), k)
      in_ring[k] = true
    end
  end

  -- take(k) -> stream, entry id of key k's oldest held job (removed from the lists), or nil when it has none;
  --   the key leaves the ring with its last held job
  function self.take(k)
    local lo, hi = prefix(k)
    local m = redis.call('ZRANGEBYLEX', queued, '[' .. lo, hi, 'LIMIT', 0, 2)
    if not m[1] then
      redis.call('ZREM', ring, k)
      in_ring[k] = false
      return nil
    end
    redis.call('ZREM', queued, m[1])
    if not m[2] then
      redis.call('ZREM', ring, k)
      in_ring[k] = false
    end
    local address = string.sub(m[1], #lo + 18)
    redis.call('ZREM', held, address)
    local s, eid = address_stream(address, by_level)
    return s, eid, address
  end

  -- served(k): key k goes to the back of the ring (if it is still there)
  function self.served(k)
    if in_ring[k] ~= false then redis.call('ZADD', ring, 'XX', next_seq('turn'), k) end
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
