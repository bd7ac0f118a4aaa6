#!lua flags=allow-oom
-- run_now: an operator's "promote": a delayed job, or a failed one waiting for its retry, goes onto the ready
-- stream now instead of at its due time. Its attempts and last error stay as they are.
--
-- KEYS[1]  delayed sorted set
-- KEYS[2]  scheduled stream
-- KEYS[3]  ready stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- ARGV[1]  job id
-- ARGV[2]  now, ms since the Unix epoch
-- ARGV[3]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns:
--   1  moved to the ready stream (event `promoted`)
--   0  not delayed or failed-waiting (nothing done)
--  -1  its body was gone: the stray id is dropped from the delayed set and the index
-- lib/to_ready: move a delayed (or failed, retry-waiting) job's body onto the ready stream.
-- to_ready(scheduled, ready, index, jid) -> true if moved (the body gets its `id` field, the index points at the
-- new ready entry, the scheduled entry is deleted); false if its body was gone (the index entry is dropped).
-- The caller removes `jid` from the delayed set either way.
local function to_ready(scheduled, ready, index, jid)
  local sid = redis.call('HGET', index, jid)
  local r = {}
  if sid then r = redis.call('XRANGE', scheduled, sid, sid) end
  if not r[1] then
    redis.call('HDEL', index, jid)
    return false
  end
  local fields = r[1][2]
  local has_id = false
  for i = 1, #fields, 2 do
    if fields[i] == 'id' then has_id = true end
  end
  if not has_id then
    fields[#fields + 1] = 'id'
    fields[#fields + 1] = jid
  end
  local nid = redis.call('XADD', ready, '*', unpack(fields))
  redis.call('HSET', index, jid, nid)
  redis.call('XDEL', scheduled, sid)
  return true
end
-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end
local delayed, scheduled, ready, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jid, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not redis.call('ZSCORE', delayed, jid) then return 0 end
local moved = to_ready(scheduled, ready, index, jid)
redis.call('ZREM', delayed, jid)
if not moved then return -1 end
event(events, maxlen, 'event', 'promoted', 'id', jid, 'ms', now)
return 1
