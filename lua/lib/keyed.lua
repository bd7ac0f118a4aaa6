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
