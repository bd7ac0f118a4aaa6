#!lua
-- enqueue: add one job that needs more than a plain XADD: a caller-chosen job id, a dedup key, or a delay.
-- With a dedup record (ttl > 0) a second enqueue of the same key returns the first job's id and adds nothing;
-- a job id that is still live (in the index) is never added twice either.
--
-- KEYS[1]  the stream of the job's priority level: the ready stream for level 0, `<P>:ready:<p>` for level p
-- KEYS[2]  delayed sorted set
-- KEYS[3]  scheduled stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  dedup key (string: job id), used only when ARGV[2] > 0
-- KEYS[6]  priorities hash (read only, only when the fields carry `priority` >= 1: the level must exist)
-- ARGV[1]  job id; '' = none (only for a job of a level above 0, ready now, without dedup: the entry gets no `id`
--          field and no index entry, and its job id is `<entry id>@<level>`)
-- ARGV[2]  dedup ttl, ms (0 = no dedup record)
-- ARGV[3]  due time, ms since the Unix epoch (0 or <= now: ready at once)
-- ARGV[4]  now, ms since the Unix epoch
-- ARGV[5..] entry fields, flat (name, value, ...); must not contain `id`; `priority` (level >= 1) needs KEYS[6]
--
-- Returns {code, job id}:
--   1  added to the ready stream
--   2  added to the delayed set
--   0  duplicate: nothing added; the job id is the existing job's
--  -1  no such priority level: nothing added; the second element is the queue's number of levels
--- @include "lib/lanes"
local ready, delayed, scheduled, index, dedup = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jid, ttl, due, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ttl > 0 then
  local existing = redis.call('GET', dedup)
  if existing then return {0, existing} end
end
if jid ~= '' and redis.call('HEXISTS', index, jid) == 1 then
  return {0, jid}
end
local fields = {'id', jid}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
for i = 5, #ARGV - 1, 2 do
  if ARGV[i] == 'priority' then
    local levels = 1
    if KEYS[6] then levels = tonumber(redis.call('HGET', KEYS[6], 'levels')) or 1 end
    if (tonumber(ARGV[i + 1]) or 0) >= levels then return {-1, levels} end
  end
end
if jid == '' then
  -- An unnamed job of a level above 0: a plain entry, named by its entry id and level.
  local plain = {}
  for i = 5, #ARGV do plain[#plain + 1] = ARGV[i] end
  return {1, own_id(ready, redis.call('XADD', ready, '*', unpack(plain)))}
end
local code
if due > now then
  local sid = redis.call('XADD', scheduled, '*', unpack(fields))
  redis.call('ZADD', delayed, due, jid)
  redis.call('HSET', index, jid, sid)
  code = 2
else
  local nid = redis.call('XADD', ready, '*', unpack(fields))
  redis.call('HSET', index, jid, nid)
  code = 1
end
if ttl > 0 then
  redis.call('SET', dedup, jid, 'PX', ttl)
end
return {code, jid}
