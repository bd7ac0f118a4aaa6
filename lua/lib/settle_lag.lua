-- lib/settle_lag: after deleting undelivered entries from the ready stream, keep the group's `lag` readable.
-- Redis reports lag as nil while a deleted entry lies after the group's last-delivered id. When nothing
-- undelivered is left, moving the last-delivered id to the stream's last id (with entries-read = entries
-- added) changes no delivery and makes lag exact (0) again. Needs lib/last_delivered.
-- settle_lag(ready, group)
local function settle_lag(ready, group)
  local last = last_delivered(ready, group)
  if last == '0-0' then return end -- no group (or nothing delivered and nothing to fix)
  if redis.call('XRANGE', ready, '(' .. last, '+', 'COUNT', 1)[1] then return end
  local info = redis.call('XINFO', 'STREAM', ready)
  local added
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
  if added then redis.call('XGROUP', 'SETID', ready, group, '$', 'ENTRIESREAD', added) end
end
