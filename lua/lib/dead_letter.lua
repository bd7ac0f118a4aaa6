-- lib/dead_letter: move a job to the dead-letter stream (the caller acks and deletes its entry and writes the
-- event).
-- dead_letter(dead, deadids, index, eid, jid, fields, reason, err, made, now): appends the entry's fields (minus
-- any earlier dead_* fields) behind the dead_* fields, indexes the dead letter by job id and drops the job id from
-- the live index. `now` is the text stored as dead_ms.
local function dead_letter(dead, deadids, index, eid, jid, fields, reason, err, made, now)
  local out = {'dead_reason', reason, 'dead_error', err, 'dead_ms', now, 'dead_entry', eid,
    'dead_attempts', tostring(made), 'dead_job', jid}
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 5) ~= 'dead_' then
      out[#out + 1] = fields[i]
      out[#out + 1] = fields[i + 1]
    end
  end
  local did = redis.call('XADD', dead, '*', unpack(out))
  redis.call('HSET', deadids, jid, did)
  redis.call('HDEL', index, jid)
end
