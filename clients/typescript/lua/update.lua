#!lua
-- update: set a field of a running job's record (progress, or new job data used by its next retry). Fenced
-- like ack, so a stale worker cannot overwrite what the current owner reports.
--
-- KEYS[1]  ready stream
-- KEYS[2]  job record hash
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  entry id
-- ARGV[4]  token (delivery count)
-- ARGV[5]  field: 'progress' or 'data'
-- ARGV[6]  value (CBOR)
-- ARGV[7]  record ttl, ms
--
-- Returns 1 (written) or 0 (stale: not owned by this delivery; nothing changed).
-- lib/fence: the fence. A delivery may change a job only while its consumer holds the entry under the same
-- delivery count (the token) it was handed with; a reclaimed, acked or re-delivered entry fails the check.
-- owns(ready, group, consumer, eid, token) -> true if `consumer` holds `eid` under delivery `token`
local function owns(ready, group, consumer, eid, token)
  local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
  return p[1] ~= nil and p[1][4] == token
end

if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])) then
  return 0
end
if ARGV[5] ~= 'progress' and ARGV[5] ~= 'data' then
  return redis.error_reply('ERR rill update: field must be progress or data')
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
