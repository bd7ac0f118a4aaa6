#!lua flags=allow-oom
-- retire: remove a consumer from the group, but only if it has no pending entries (XGROUP DELCONSUMER would
-- make them unreachable).
--
-- KEYS[1]  ready stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
--
-- Returns 1 (removed), 0 (still has pending entries; kept).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
