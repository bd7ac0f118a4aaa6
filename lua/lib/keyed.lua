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
