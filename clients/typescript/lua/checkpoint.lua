#!lua
-- checkpoint: save a running job's state. Fenced like ack (a stale delivery cannot write) and versioned: the
-- version must be greater than the newest checkpoint's. The job's checkpoint stream keeps the newest `keep`
-- entries and lives for `ttl` after each write (ack.lua shortens it to the record retention once the job completes;
-- a failed job's checkpoints keep their TTL, so its retry can resume from them).
--
-- KEYS[1]  ready stream
-- KEYS[2]  checkpoint stream of the job
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3]  entry id of the delivery
-- ARGV[4]  token (delivery count)
-- ARGV[5]  version (integer > 0), or 0 for the next one (newest + 1)
-- ARGV[6]  now, ms since the Unix epoch
-- ARGV[7]  label ('' = none)
-- ARGV[8]  state (CBOR)
-- ARGV[9]  keep: most checkpoints kept (>= 1)
-- ARGV[10] ttl of the checkpoint stream, ms
-- ARGV[11] largest state accepted, bytes
--
-- Returns {code, newest version}:
--   1  written (newest version = the version written)
--   0  stale: this delivery no longer owns the job; nothing written
--  -1  version not newer than the newest checkpoint's; nothing written
--  -2  state larger than the limit; nothing written
-- lib/fence: the fence. A delivery may change a job only while its consumer holds the entry under the same
-- delivery count (the token) it was handed with; a reclaimed, acked or re-delivered entry fails the check.
-- owns(ready, group, consumer, eid, token) -> true if `consumer` holds `eid` under delivery `token`
local function owns(ready, group, consumer, eid, token)
  local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
  return p[1] ~= nil and p[1][4] == token
end

local ready, ckpt = KEYS[1], KEYS[2]
local group, consumer, eid, token = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local version, now, label, state = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local keep, ttl, limit = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
if not owns(ready, group, consumer, eid, token) then
  return {0, 0}
end
local newest = 0
local last = redis.call('XREVRANGE', ckpt, '+', '-', 'COUNT', 1)
if last[1] then
  local f = last[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'version' then newest = tonumber(f[i + 1]) or 0 end
  end
end
if #state > limit then
  return {-2, newest}
end
if version == 0 then version = newest + 1 end
if version <= newest then
  return {-1, newest}
end
redis.call('XADD', ckpt, 'MAXLEN', keep, '*', 'version', tostring(version), 'state', state, 'consumer', consumer,
  'entry', eid, 'token', tostring(token), 'ms', now, 'label', label)
redis.call('PEXPIRE', ckpt, ttl)
return {1, version}
