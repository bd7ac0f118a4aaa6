#!lua flags=allow-oom
-- purge: delete dead letters for good, oldest first: those whose entry id time is before a cutoff, or every one.
-- Removes their dead-index entries too. Call again while it returns `count`.
--
-- KEYS[1]  dead-letter stream
-- KEYS[2]  dead index hash (job id -> dead-letter entry id)
-- ARGV[1]  cutoff, ms since the Unix epoch: entries with an id time below it go; 0 = every entry
-- ARGV[2]  most entries to delete in this call
--
-- Returns the number deleted.
local dead, deadids = KEYS[1], KEYS[2]
local cutoff, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = '+'
if cutoff > 0 then last = '(' .. cutoff .. '-0' end
local r = redis.call('XRANGE', dead, '-', last, 'COUNT', count)
for _, e in ipairs(r) do
  local did, f = e[1], e[2]
  local jid = did
  for j = 1, #f, 2 do
    if f[j] == 'dead_job' then jid = f[j + 1] end
  end
  if redis.call('HGET', deadids, jid) == did then
    redis.call('HDEL', deadids, jid)
  end
  redis.call('XDEL', dead, did)
end
return #r
