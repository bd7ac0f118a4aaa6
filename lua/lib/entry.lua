-- lib/entry: what a job's stream entry says about its attempts.
-- job_fields(fields, default_max) -> attempts recorded on the entry, max attempts, job id (nil: the entry id)
local function job_fields(fields, default_max)
  local attempts, max, jid = 0, default_max, nil
  for i = 1, #fields, 2 do
    local f = fields[i]
    if f == 'attempts' then attempts = math.max(0, math.floor(tonumber(fields[i + 1]) or 0))
    elseif f == 'max_attempts' then max = math.floor(tonumber(fields[i + 1]) or default_max)
    elseif f == 'id' then jid = fields[i + 1]
    end
  end
  return attempts, max, jid
end
-- attempts_made(recorded, deliveries, failed) -> attempts made so far: those recorded on the entry plus this
-- entry's deliveries, where the latest one counts only if it `failed` (a stalled, handed-back or parked delivery,
-- or one just started, does not count itself)
local function attempts_made(recorded, deliveries, failed)
  if failed then return recorded + deliveries end
  return recorded + deliveries - 1
end
