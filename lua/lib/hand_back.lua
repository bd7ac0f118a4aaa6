--- @include "lib/entry"
--- @include "lib/lanes"
-- lib/hand_back: an entry rewritten for its next delivery after a hand-back (release, park). The delivery handed
-- back is not counted as an attempt, and its `last_error` goes: it ended by hand-back, not by an error. An entry
-- without `enqueued_ms` gets its entry id's time, so the job keeps its enqueue time in the new entry.
-- handed_back(fields, stream, eid, token) -> new fields (`id` and `attempts` last), job id, attempts made
local function handed_back(fields, stream, eid, token)
  local attempts, jid, out, timed = 0, own_id(stream, eid), {}, false
  for j = 1, #fields, 2 do
    local f = fields[j]
    if f == 'attempts' then attempts = math.max(0, math.floor(tonumber(fields[j + 1]) or 0))
    elseif f == 'id' then jid = fields[j + 1]
    elseif f == 'enqueued_ms' then timed = true
    end
    if f ~= 'attempts' and f ~= 'id' and f ~= 'last_error' then
      out[#out + 1] = f
      out[#out + 1] = fields[j + 1]
    end
  end
  local made = attempts_made(attempts, token, false)
  if not timed then
    out[#out + 1] = 'enqueued_ms'
    out[#out + 1] = string.match(eid, '^(%d+)')
  end
  out[#out + 1] = 'id'
  out[#out + 1] = jid
  out[#out + 1] = 'attempts'
  out[#out + 1] = tostring(made)
  return out, jid, made
end
