#!lua
-- ack: complete a batch of deliveries. Fenced: a delivery is completed only if this consumer still owns the
-- entry with the same delivery count (token) it was handed; otherwise nothing changes for that job.
-- The entry is acked and deleted in the same step, so the ready stream only ever holds unfinished jobs.
--
-- KEYS[1]      ready stream
-- KEYS[2]      index hash (job id -> entry id)
-- KEYS[3]      events stream
-- KEYS[3+i]    job record hash of the i-th job
-- ARGV[1]      consumer group
-- ARGV[2]      consumer name
-- ARGV[3]      now, ms since the Unix epoch
-- ARGV[4]      retention of the completed record, ms; 0 = keep no record (the job hash is deleted)
-- ARGV[5]      events stream MAXLEN (approximate); 0 = write no `completed` events
-- ARGV[6..]    five per job: entry id, token (delivery count), job id, attempt number, result (CBOR; '' = none)
--
-- Returns an array with one code per job, in order:
--   1  completed: entry acked and deleted, record written (if retention > 0)
--   0  stale: this delivery no longer owns the entry; nothing changed
local ready, index, events = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local retention = tonumber(ARGV[4])
local maxlen = tonumber(ARGV[5])
local n = (#ARGV - 5) / 5
local codes, owned = {}, {}
for i = 1, n do
  local b = 5 + (i - 1) * 5
  local eid, token, jid, attempt, result = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
  if p[1] and p[1][4] == token then
    codes[i] = 1
    owned[#owned + 1] = eid
    local job = KEYS[3 + i]
    if retention > 0 then
      if result ~= '' then
        redis.call('HSET', job, 'state', 'completed', 'finished_ms', now, 'attempt', attempt, 'result', result)
      else
        redis.call('HSET', job, 'state', 'completed', 'finished_ms', now, 'attempt', attempt)
      end
      redis.call('PEXPIRE', job, retention)
    else
      redis.call('DEL', job)
    end
    if jid ~= eid then
      redis.call('HDEL', index, jid)
    end
    if maxlen > 0 then
      redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'event', 'completed', 'id', jid, 'attempt', attempt,
        'ms', now)
    end
  else
    codes[i] = 0
  end
end
if #owned > 0 then
  redis.call('XACK', ready, group, unpack(owned))
  redis.call('XDEL', ready, unpack(owned))
end
return codes
