#!lua
-- levels: set a queue's priority levels (section 6g). Level 0 is the ready stream; each level p >= 1 gets its
-- stream `<P>:ready:<p>` with the consumer group (created here, reading from the start). Fewer levels than before
-- are refused while a level that would go still holds a job (waiting or running); an empty one is deleted.
--
-- KEYS[1]  priorities hash (`levels`, `weights`)
-- KEYS[2..16] the streams of priority levels 1..15
-- ARGV[1]  consumer group
-- ARGV[2]  levels, 1..16 (1 = no priorities: the hash is deleted)
-- ARGV[3]  weights: '' (strict: a lower level is read only when the levels before it are empty) or one positive
--          integer per level, comma-separated (weighted: each read starts at a level picked in these proportions)
--
-- Returns {code, level}:
--   1  set (level 0)
--   0  refused: `level` still holds a job (nothing changed)
-- lib/last_delivered: how far a consumer group has read the ready stream.
-- last_delivered(ready, group) -> the group's last-delivered id ('0-0' without the stream or the group)
local function last_delivered(ready, group)
  local groups = redis.pcall('XINFO', 'GROUPS', ready)
  if groups.err then return '0-0' end
  for _, g in ipairs(groups) do
    local name, id
    for k = 1, #g, 2 do
      if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then id = g[k + 1] end
    end
    if name == group then return id end
  end
  return '0-0'
end
-- undelivered(ready, group, eid) -> true if entry `eid` (an `ms-seq` id) comes after the group's last-delivered
-- id: it has not been delivered yet
local function undelivered(ready, group, eid)
  local ems, eseq = string.match(eid, '^(%d+)-(%d+)$')
  local lms, lseq = string.match(last_delivered(ready, group), '^(%d+)-(%d+)$')
  ems, eseq, lms, lseq = tonumber(ems), tonumber(eseq), tonumber(lms), tonumber(lseq)
  return ems > lms or (ems == lms and eseq > lseq)
end
local conf, group, levels, weights = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
-- has_group(s) -> whether stream `s` exists with the group
local function has_group(s)
  if redis.call('EXISTS', s) == 0 then return false end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
    for k = 1, #g, 2 do
      if g[k] == 'name' and g[k + 1] == group then return true end
    end
  end
  return false
end
for p = levels, 15 do
  local s = KEYS[1 + p]
  if s and redis.call('EXISTS', s) == 1 then
    local pending = redis.pcall('XPENDING', s, group)
    if type(pending) == 'table' and not pending.err and (tonumber(pending[1]) or 0) > 0 then return {0, p} end
    -- Entries after the group's last-delivered id are waiting (finished ones below it do not count).
    local last = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
    if last[1] then
      local ems, eseq = string.match(last[1][1], '^(%d+)-(%d+)$')
      local lms, lseq = string.match(last_delivered(s, group), '^(%d+)-(%d+)$')
      ems, eseq, lms, lseq = tonumber(ems), tonumber(eseq), tonumber(lms), tonumber(lseq)
      if ems > lms or (ems == lms and eseq > lseq) then return {0, p} end
    end
  end
end
for p = levels, 15 do
  if KEYS[1 + p] then redis.call('DEL', KEYS[1 + p]) end
end
for p = 1, levels - 1 do
  if not has_group(KEYS[1 + p]) then
    redis.call('XGROUP', 'CREATE', KEYS[1 + p], group, '0', 'MKSTREAM')
  end
end
if levels <= 1 then
  redis.call('DEL', conf)
elseif weights == '' then
  redis.call('HSET', conf, 'levels', levels)
  redis.call('HDEL', conf, 'weights')
else
  redis.call('HSET', conf, 'levels', levels, 'weights', weights)
end
return {1, 0}
