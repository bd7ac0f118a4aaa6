#!lua flags=allow-oom
-- requeue: put dead letters back on the ready stream (an operator's "retry"). Each one becomes a fresh job with
-- its original fields and job id, a full set of attempts (no `attempts` field) and the error it died with as
-- `last_error`; its dead-letter entry and dead-index entry are removed.
--
-- KEYS[1]  dead-letter stream
-- KEYS[2]  dead index hash (job id -> dead-letter entry id)
-- KEYS[3]  ready stream
-- KEYS[4]  index hash (job id -> entry id)
-- KEYS[5]  events stream
-- KEYS[6]  priorities hash (optional, with KEYS[7..]: without them every job goes to the ready stream)
-- KEYS[7..21] the streams of priority levels 1..15 (a job goes back to its `priority` field's level)
-- ARGV[1]  now, ms since the Unix epoch
-- ARGV[2]  events stream MAXLEN (approximate); 0 = no event
-- ARGV[3..] dead-letter entry ids
--
-- Returns one code per entry id:
--   1  requeued (event `requeued`)
--   0  no such dead letter (already requeued or purged)
--  -1  left dead: its job id is live again (in the index: re-enqueued since it died)
--- @include "lib/event"
--- @include "lib/lanes"
local dead, deadids, ready, index, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, maxlen = ARGV[1], ARGV[2]
local out = {}
local ls = lanes(ready, 6)
for i = 3, #ARGV do
  local did = ARGV[i]
  local r = redis.call('XRANGE', dead, did, did)
  if not r[1] then
    out[#out + 1] = 0
  else
    local f = r[1][2]
    local jid, err = did, nil
    for j = 1, #f, 2 do
      if f[j] == 'dead_job' then jid = f[j + 1] elseif f[j] == 'dead_error' then err = f[j + 1] end
    end
    if redis.call('HEXISTS', index, jid) == 1 then
      out[#out + 1] = -1
    else
      local nf = {'id', jid}
      for j = 1, #f, 2 do
        local name = f[j]
        if string.sub(name, 1, 5) ~= 'dead_' and name ~= 'id' and name ~= 'attempts' and name ~= 'last_error' then
          nf[#nf + 1] = name
          nf[#nf + 1] = f[j + 1]
        end
      end
      if err and err ~= '' then
        nf[#nf + 1] = 'last_error'
        nf[#nf + 1] = err
      end
      local nid = redis.call('XADD', lane_of(ls, nf), '*', unpack(nf))
      redis.call('HSET', index, jid, nid)
      redis.call('XDEL', dead, did)
      if redis.call('HGET', deadids, jid) == did then
        redis.call('HDEL', deadids, jid)
      end
      event(events, maxlen, 'event', 'requeued', 'id', jid, 'ms', now)
      out[#out + 1] = 1
    end
  end
end
return out
