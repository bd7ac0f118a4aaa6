#!lua flags=allow-oom
-- ack: complete a batch of deliveries. Fenced: a delivery is completed only if this consumer still owns the
-- entry with the same delivery count (token) it was handed; otherwise nothing changes for that job. The entries
-- are acked and removed in the same step: the ready stream is trimmed (XTRIM MINID) below its oldest unfinished
-- entry (the oldest pending one, or the first not yet delivered), which costs a tenth of deleting entries one by
-- one. When the oldest pending entry is more than the lazy window older (in entry-id time) than the newest entry
-- this call acks, the batch's entries are deleted outright (XDEL), so finished entries never pile up behind a
-- long job. On Redis 8.2 and later (when the caller allows it), a batch of at most 8 is acked and deleted by one
-- XACKDEL instead: it saves the trim's lookups (XPENDING, XINFO), which outweighs deleting entries one by one only
-- for small batches (measured: 19 against 26 us of Redis CPU for one entry, 5.4 against 4.0 us per entry for 16).
-- One XPENDING over the batch's id range checks ownership of the whole batch; one event entry lists every job
-- completed by the call.
--
-- KEYS[1]      ready stream
-- KEYS[2]      index hash (job id -> entry id)
-- KEYS[3]      events stream
-- KEYS[4]      held sorted set (entries set aside by per-key limits, SPEC §6h: the trim stays below the oldest)
-- KEYS[3+2j]   job record hash of the j-th extra (below)
-- KEYS[4+2j]   checkpoint stream of the j-th extra
-- ARGV[1]      consumer group
-- ARGV[2]      consumer name
-- ARGV[3]      now, ms since the Unix epoch
-- ARGV[4]      retention of a job record, ms; 0 = write no records
-- ARGV[5]      events stream MAXLEN (approximate); 0 = write no `completed` event
-- ARGV[6]      keep: '1' = write a record for every completed job (with or without result), '0' = only for
--              jobs with a result or a job id of their own (not their entry id, nor `<entry id>@<p>` on the stream
--              of level p, nor a generated `~<ms>.<hex>` id of a partitioned queue: named or retried jobs, which
--              callers look up by that id)
-- ARGV[7]      n: number of deliveries
-- ARGV[8]      lazy window, ms (0 = always delete entries outright); unused on the XACKDEL path
-- ARGV[9]      '1' = XACKDEL allowed: used for batches of up to 8 when the server has it (Redis >= 8.2, checked
--              here, so '1' is safe on any server); '0' = always XACK + XTRIM
-- ARGV[10..]   two per delivery, in any order: entry id, token (delivery count)
-- then         five per extra, for deliveries whose job id differs from the entry id (`<entry id>@<p>` on the stream
--              of level p, section 6g), or that have a result, or
--              that wrote the job record, or (keep = '1') all of them: position of the delivery (1-based),
--              job id, attempt number, result (CBOR; '' = none), touched ('1' if this delivery wrote the record)
--
-- Returns n (an integer) when every delivery completed; otherwise an array with one code per delivery, in order:
--   1  completed: entry acked and removed (now, or trimmed lazily by a later call); record written (or deleted,
--      if touched and not kept); if touched, its checkpoints expire after the retention (deleted if 0)
--   0  stale: this delivery no longer owns the entry; nothing changed
-- lib/fence_batch: the fence (lib/fence) for a batch of deliveries, in one XPENDING page (or a few).
-- owned_between(ready, group, consumer, lo, hi, n) -> entry id -> delivery count, for every entry from `lo` to
-- `hi` that `consumer` holds, for a batch of `n` deliveries
local function owned_between(ready, group, consumer, lo, hi, n)
  local owned = {}
  local page = n + 16
  while true do
    local p = redis.call('XPENDING', ready, group, lo, hi, page, consumer)
    for _, e in ipairs(p) do owned[e[1]] = e[4] end
    if #p < page then break end
    lo = '(' .. p[#p][1]
  end
  return owned
end
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
-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end
-- lib/lanes: a queue's priority levels (SPEC §6g). Level 0 is the ready stream, level p >= 1 the stream
-- `<P>:ready:<p>`; a script that routes or finds jobs by level takes the priorities hash and the streams of levels
-- 1..15 as its last KEYS (a caller that passes none gets level 0 only, as before priorities).
-- lanes(ready, first) -> {level 0 stream, level 1 stream, ...}: the hash at KEYS[first] says how many (`levels`,
--   1 when unset), the streams follow it
local function lanes(ready, first)
  local out = {ready}
  local conf = KEYS[first]
  if not conf then return out end
  local n = tonumber(redis.call('HGET', conf, 'levels')) or 1
  for p = 1, n - 1 do
    local k = KEYS[first + p]
    if not k then break end
    out[#out + 1] = k
  end
  return out
end
-- own_id(stream, eid) -> the job id of an entry without an `id` field on `stream`: its entry id on the ready stream,
--   `<entry id>@<p>` on the stream of level p (named `<P>:ready:<p>`), since entry ids repeat across levels
local function own_id(stream, eid)
  local p = string.match(stream, ':ready:(%d+)$')
  if p then return eid .. '@' .. p end
  return eid
end
-- entry_of(jid) -> the entry id an unnamed job's id holds (`<ms>-<seq>`, or `<ms>-<seq>@<p>` above level 0), or jid
local function entry_of(jid)
  return string.match(jid, '^(%d+%-%d+)@%d+$') or jid
end
-- level_of(fields) -> the entry's `priority` field as a level (0 when absent or not a number)
local function level_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'priority' then return math.max(0, math.floor(tonumber(fields[i + 1]) or 0)) end
  end
  return 0
end
-- lane_of(ls, fields) -> the stream an entry goes back to: its level's, or the last level's when it names a level
--   the queue no longer has
local function lane_of(ls, fields)
  return ls[math.min(level_of(fields), #ls - 1) + 1]
end
-- locate(ls, eid, jid) -> the stream holding entry `eid` of job `jid`, the entry's fields and its level, or nil.
--   Entry ids repeat across streams, so the entry's job id (its `id` field, else the entry id) must be `jid`.
local function locate(ls, eid, jid)
  if not string.match(eid, '^%d+%-%d+$') then return nil end
  for level, s in ipairs(ls) do
    local r = redis.call('XRANGE', s, eid, eid)
    if r[1] then
      local id, f = nil, r[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'id' then id = f[i + 1] end
      end
      id = id or own_id(s, eid)
      if id == jid then return s, f, level - 1 end
    end
  end
  return nil
end

local ready, index, events, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local retention = tonumber(ARGV[4])
local maxlen = tonumber(ARGV[5])
local keep = ARGV[6] == '1'
local n = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
if n < 1 then return {} end
local X = 9 + 2 * n

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq), ms
end

-- The fence for the batch: this consumer's pending entries from `lo` to `hi` with their delivery counts, and a
-- code per delivery (1: owned with this token, 0: stale).
local lo, hi = ARGV[10], ARGV[8 + 2 * n]
local function fence()
  local owned = owned_between(ready, group, consumer, lo, hi, n)
  local codes, acked, k = {}, {}, 0
  for i = 1, n do
    local eid = ARGV[8 + 2 * i]
    if owned[eid] == tonumber(ARGV[9 + 2 * i]) then
      owned[eid] = nil
      codes[i] = 1
      k = k + 1
      acked[k] = eid
    else
      codes[i] = 0
    end
  end
  return codes, acked, k
end
local codes, acked, k = fence()
-- Workers send batches in ascending id order, so the range is first to last. A batch in another order (a foreign
-- client's) shows as stale deliveries: only then are its lowest and highest ids worked out and the fence read
-- again (parsing every id on every call would cost Redis CPU on every job).
if k < n then
  local lms, lseq = parse(lo)
  local hms, hseq = parse(hi)
  for j = 1, n do
    local eid = ARGV[8 + 2 * j]
    local ms, seq = parse(eid)
    if ms < lms or (ms == lms and seq < lseq) then lo, lms, lseq = eid, ms, seq end
    if ms > hms or (ms == hms and seq > hseq) then hi, hms, hseq = eid, ms, seq end
  end
  if lo ~= ARGV[10] or hi ~= ARGV[8 + 2 * n] then
    codes, acked, k = fence()
  end
end
local ackdel = ARGV[9] == '1' and k <= 8 and redis.REDIS_VERSION_NUM >= 0x080200
-- Acked before anything else is written: a refused XACK (ACL) then leaves no record claiming completion.
if k > 0 then
  if ackdel then
    redis.call('XACKDEL', ready, group, 'IDS', k, unpack(acked))
  else
    redis.call('XACK', ready, group, unpack(acked))
  end
end
local names = {}
for j = 1, (#ARGV - X) / 5 do
  local b = X + (j - 1) * 5
  local i = tonumber(ARGV[b + 1])
  if codes[i] == 1 then
    local eid, jid, attempt, result, touched = ARGV[8 + 2 * i], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
    local job, ckpt = KEYS[3 + 2 * j], KEYS[4 + 2 * j]
    names[i] = jid
    -- Indexed: the id is not the entry's own. Named: and not one a producer generated for a partitioned queue
    -- (`~<ms>.<hex>`, section 2a), which is looked up through events like an entry-id job, so keeps no record.
    local indexed = jid ~= eid and jid ~= own_id(ready, eid)
    local named = indexed and string.sub(jid, 1, 1) ~= '~'
    if retention > 0 and (keep or result ~= '' or named) then
      if result ~= '' then
        redis.call('HSET', job, 'state', 'completed', 'finished_ms', now, 'attempt', attempt, 'result', result)
      else
        redis.call('HSET', job, 'state', 'completed', 'finished_ms', now, 'attempt', attempt)
      end
      redis.call('PEXPIRE', job, retention)
    elseif touched == '1' then
      redis.call('DEL', job)
    end
    if touched == '1' then
      if retention > 0 then redis.call('PEXPIRE', ckpt, retention) else redis.call('DEL', ckpt) end
    end
    if indexed then
      redis.call('HDEL', index, jid)
    end
  end
end
if k > 0 and not ackdel then
  -- Everything below the oldest pending entry is finished (a pending entry was delivered, so it is never after
  -- the first undelivered one). With nothing pending, everything up to the group's last-delivered id is.
  local floor
  local oldest = redis.call('XPENDING', ready, group, '-', '+', 1)
  if oldest[1] then
    floor = oldest[1][1]
    local oms = parse(floor)
    local ams = parse(hi)
    if ams - oms > window then
      redis.call('XDEL', ready, unpack(acked))
    end
  else
    local _, lseq, lms_text = parse(last_delivered(ready, group))
    floor = lms_text .. '-' .. string.format('%.0f', lseq + 1)
  end
  -- Held entries (per-key limits) are waiting jobs below the group's position: the trim stays below the oldest
  -- (of any stream: the set spans levels), and with one older than the window the batch goes outright.
  local h = redis.call('ZRANGE', held, 0, 0, 'WITHSCORES')
  if h[2] then
    local hms = tonumber(h[2])
    if hms <= parse(floor) then
      floor = string.format('%.0f', hms) .. '-0'
      if parse(hi) - hms > window then redis.call('XDEL', ready, unpack(acked)) end
    end
  end
  redis.call('XTRIM', ready, 'MINID', floor)
end
if k > 0 and maxlen > 0 then
  local done = acked
  local level_stream = own_id(ready, '') ~= ''  -- a level stream's entries are named <entry id>@<p>
  if #ARGV > X or level_stream then
    done = {}
    for i = 1, n do
      if codes[i] == 1 then done[#done + 1] = names[i] or own_id(ready, ARGV[8 + 2 * i]) end
    end
  end
  event(events, maxlen, 'event', 'completed', 'ids', table.concat(done, ' '),
    'count', tostring(k), 'ms', now)
end
-- The common case in one integer: every delivery completed.
if k == n then return n end
return codes
