#!lua flags=no-writes
-- permissions: whether the caller may run every command a worker needs (directly, or inside rill's scripts), checked
-- with redis.acl_check_cmd when a worker starts, so a missing permission is one clear error at start rather than
-- a worker that runs on and is refused over and over. Reads nothing and writes nothing.
--
-- KEYS[1]   ready stream
-- KEYS[2]   index hash
-- KEYS[3]   delayed sorted set
-- KEYS[4]   scheduled stream
-- KEYS[5]   dead-letter stream
-- KEYS[6]   dead index hash
-- KEYS[7]   events stream
-- KEYS[8]   a job record hash (any job id)
-- KEYS[9]   a job's checkpoint stream (any job id)
-- KEYS[10]  workers sorted set
-- KEYS[11]  this worker's record hash
-- KEYS[12]  heartbeats stream
-- KEYS[13]  signals stream
-- KEYS[14]  signal outcomes stream
-- KEYS[15]  paused flag
-- KEYS[16]  parked sorted set
-- KEYS[17]  schedules sorted set
-- KEYS[18]  a schedule's hash (any name)
-- KEYS[19]  rate limit hash
-- KEYS[20]  rate limit starts sorted set
-- KEYS[21]  the queue's settings hash (optional: checked when given)
-- ARGV[1]   consumer group
-- ARGV[2]   consumer name
--
-- Returns '' when every command is allowed, otherwise '<COMMAND> <key>' for the first one refused.
local ready, index, delayed, scheduled, dead, deadids, events, job, ckpt, workers, record, beats, signals,
  outcomes, paused, parked, schedules, schedule, limit, starts, config = unpack(KEYS)
local group, consumer = ARGV[1], ARGV[2]
local calls = {
  {'XREADGROUP', 'GROUP', group, consumer, 'COUNT', '1', 'STREAMS', ready, '>'},
  {'XGROUP', 'CREATE', ready, group, '0'},
  {'XGROUP', 'DELCONSUMER', ready, group, consumer},
  {'XINFO', 'GROUPS', ready},
  {'XPENDING', ready, group, '-', '+', '1', consumer},
  {'XACK', ready, group, '0-1'},
  {'XCLAIM', ready, group, consumer, '0', '0-1', 'JUSTID'},
  {'XAUTOCLAIM', ready, group, consumer, '0', '0-0'},
  {'XRANGE', ready, '-', '+'},
  {'XADD', ready, '*', 'f', 'v'},
  {'XDEL', ready, '0-1'},
  {'XTRIM', ready, 'MINID', '0'},
  {'HSET', index, 'f', 'v'},
  {'HGET', index, 'f'},
  {'HDEL', index, 'f'},
  {'HEXISTS', index, 'f'},
  {'ZADD', delayed, '0', 'm'},
  {'ZREM', delayed, 'm'},
  {'ZRANGE', delayed, '0', '0'},
  {'ZRANGEBYSCORE', delayed, '-inf', '0'},
  {'XADD', scheduled, '*', 'f', 'v'},
  {'XRANGE', scheduled, '-', '+'},
  {'XDEL', scheduled, '0-1'},
  {'XADD', dead, '*', 'f', 'v'},
  {'HSET', deadids, 'f', 'v'},
  {'XADD', events, '*', 'f', 'v'},
  {'HSET', job, 'f', 'v'},
  {'HGET', job, 'f'},
  {'PEXPIRE', job, '1'},
  {'DEL', job},
  {'XADD', ckpt, '*', 'f', 'v'},
  {'XREVRANGE', ckpt, '+', '-'},
  {'PEXPIRE', ckpt, '1'},
  {'DEL', ckpt},
  {'ZADD', workers, '0', 'm'},
  {'ZSCORE', workers, 'm'},
  {'ZREM', workers, 'm'},
  {'ZRANGEBYSCORE', workers, '-inf', '0'},
  {'HSET', record, 'f', 'v'},
  {'DEL', record},
  {'PEXPIRE', record, '1'},
  {'XADD', beats, '*', 'f', 'v'},
  {'XREAD', 'STREAMS', signals, '0-0'},
  {'XREVRANGE', signals, '+', '-'},
  {'XADD', outcomes, '*', 'f', 'v'},
  {'EXISTS', paused},
  {'ZADD', parked, '0', 'm'},
  {'ZSCORE', parked, 'm'},
  {'ZRANGEBYSCORE', schedules, '-inf', '0'},
  {'ZSCORE', schedules, 'm'},
  {'ZADD', schedules, '0', 'm'},
  {'ZREM', schedules, 'm'},
  {'HGET', schedule, 'f'},
  {'HMGET', schedule, 'f'},
  {'HSET', schedule, 'f', 'v'},
  {'HINCRBY', schedule, 'f', '1'},
  {'HMGET', limit, 'f'},
  {'HEXISTS', limit, 'f'},
  {'HINCRBY', limit, 'f', '1'},
  {'ZREMRANGEBYSCORE', starts, '-inf', '0'},
  {'ZCARD', starts},
  {'ZRANGE', starts, '0', '0'},
  {'ZADD', starts, '0', 'm'},
  {'PEXPIRE', starts, '1'},
  {'XREVRANGE', events, '+', '-', 'COUNT', '1'},
  {'XREAD', 'STREAMS', ready, '0-0'},
  {'TIME'},
}
-- Workers agree on the queue's lease through its settings hash (section 9, step 0).
if config then
  table.insert(calls, {'HSETNX', config, 'lease_ms', '1'})
  table.insert(calls, {'HGET', config, 'lease_ms'})
end
-- Workers ack with XACKDEL where the server has it (Redis >= 8.2; see ack.lua).
if redis.REDIS_VERSION_NUM >= 0x080200 then
  table.insert(calls, {'XACKDEL', ready, group, 'IDS', '1', '0-1'})
end
for _, c in ipairs(calls) do
  if not redis.acl_check_cmd(unpack(c)) then
    local key = ''
    for i = 2, #c do
      for _, k in ipairs(KEYS) do
        if c[i] == k then key = k end
      end
    end
    return c[1] .. ' ' .. key
  end
end
return ''
