#!lua flags=allow-oom
-- run_now: an operator's "promote": a delayed job, or a failed one waiting for its retry, goes onto the ready
-- stream now instead of at its due time. Its attempts and last error stay as they are.
--
-- KEYS[1]  delayed sorted set
-- KEYS[2]  scheduled stream
-- KEYS[3]  ready stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- KEYS[6]  priorities hash (optional, with KEYS[7..]: without them the job goes to the ready stream)
-- KEYS[7..21] the streams of priority levels 1..15 (the job goes to its `priority` field's level)
-- ARGV[1]  job id
-- ARGV[2]  now, ms since the Unix epoch
-- ARGV[3]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns:
--   1  moved to the ready stream (event `promoted`)
--   0  not delayed or failed-waiting (nothing done)
--  -1  its body was gone: the stray id is dropped from the delayed set and the index
--- @include "lib/to_ready"
--- @include "lib/event"
local delayed, scheduled, ready, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jid, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not redis.call('ZSCORE', delayed, jid) then return 0 end
local moved = to_ready(scheduled, lanes(ready, 6), index, jid)
redis.call('ZREM', delayed, jid)
if not moved then return -1 end
event(events, maxlen, 'event', 'promoted', 'id', jid, 'ms', now)
return 1
