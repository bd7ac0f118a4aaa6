-- lib/held: entries set aside by per-key limits (SPEC §6h) stay on their stream, acked and listed in `<P>:held`
-- (member = the entry's address: its id on the ready stream, `<entry id>@<p>` on level p). They are waiting jobs.
-- A script that finds jobs takes `<P>:held` right after the level tail (KEYS[first + 16], `first` being the
-- priorities hash). Needs lib/lanes.
-- is_held(first, stream, eid) -> true if the entry is held
local function is_held(first, stream, eid)
  local key = KEYS[first + 16]
  return key ~= nil and redis.call('ZSCORE', key, own_id(stream, eid)) ~= false
end
-- unhold(first, stream, eid): the entry is no longer held (its per-key list entry is dropped when its turn comes)
local function unhold(first, stream, eid)
  local key = KEYS[first + 16]
  if key then redis.call('ZREM', key, own_id(stream, eid)) end
end
