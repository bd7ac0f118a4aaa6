#!lua flags=allow-oom
-- reclaim: stalled-job recovery. Takes entries whose lease expired (idle in the pending list for at least
-- min_idle ms) and gives them to the calling consumer, following the XAUTOCLAIM cursor one bounded page per
-- call. Each take counts as a delivery; a job whose attempts made (previous deliveries included) reached its
-- max_attempts is dead-lettered with reason `exhausted` instead of being handed out.
--
-- KEYS[1]  ready stream
-- KEYS[2]  index hash (job id -> entry id)
-- KEYS[3]  dead-letter stream
-- KEYS[4]  dead index hash (job id -> dead-letter entry id)
-- KEYS[5]  events stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name (the new owner)
-- ARGV[3]  min idle, ms (the lease)
-- ARGV[4]  cursor: start entry id ('0-0' to start a pass)
-- ARGV[5]  count: at most this many entries are taken (XAUTOCLAIM inspects at most 10x as many)
-- ARGV[6]  now, ms since the Unix epoch
-- ARGV[7]  default max attempts, for entries without a max_attempts field
-- ARGV[8]  events stream MAXLEN (approximate); 0 = no event
--
-- Returns {next_cursor, taken, dead_lettered, gone}:
--   next_cursor    '0-0' when the pass is complete
--   taken          array of {entry id, token (delivery count), fields (flat array)}, now owned by the caller
--   dead_lettered  number of exhausted jobs moved to the dead-letter stream
--   gone           number of pending ids whose entries had been deleted (dropped from the pending list)
--- @include "lib/entry"
--- @include "lib/dead_letter"
--- @include "lib/lanes"
--- @include "lib/event"

local ready, index, dead, deadids, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, min_idle, cursor, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, default_max, maxlen = ARGV[6], tonumber(ARGV[7]), ARGV[8]

local r = redis.call('XAUTOCLAIM', ready, group, consumer, min_idle, cursor, 'COUNT', count)
local taken, dead_n = {}, 0
for _, e in ipairs(r[2]) do
  local eid, fields = e[1], e[2]
  if fields then
    local p = redis.call('XPENDING', ready, group, eid, eid, 1, consumer)
    local deliveries = p[1][4]
    local attempts, max, jid = job_fields(fields, default_max)
    jid = jid or own_id(ready, eid)
    local made = attempts_made(attempts, deliveries, false)
    if made >= max then
      dead_letter(dead, deadids, index, eid, jid, fields, 'exhausted', 'lease expired (worker stalled or crashed)',
        made, now)
      redis.call('XACK', ready, group, eid)
      redis.call('XDEL', ready, eid)
      event(events, maxlen, 'event', 'dead', 'id', jid, 'attempt', tostring(made),
        'ms', now, 'reason', 'exhausted')
      dead_n = dead_n + 1
    else
      taken[#taken + 1] = {eid, deliveries, fields}
      event(events, maxlen, 'event', 'stalled', 'id', jid,
        'attempt', tostring(made), 'ms', now)
    end
  end
end
local gone = 0
if r[3] then gone = #r[3] end
return {r[1], taken, dead_n, gone}
