--- @include "lib/lanes"
-- lib/to_ready: move a delayed (or failed, retry-waiting) job's body onto the stream of its level.
-- to_ready(scheduled, ls, index, jid) -> true if moved (the body gets its `id` field, the index points at the
-- new entry, the scheduled entry is deleted); false if its body was gone (the index entry is dropped).
-- `ls` is the queue's level streams (lib/lanes). The caller removes `jid` from the delayed set either way.
local function to_ready(scheduled, ls, index, jid)
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
  local nid = redis.call('XADD', lane_of(ls, fields), '*', unpack(fields))
  redis.call('HSET', index, jid, nid)
  redis.call('XDEL', scheduled, sid)
  return true
end
