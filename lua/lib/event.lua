-- lib/event: add a lifecycle event to the events stream, trimmed to about `maxlen` entries; a `maxlen` of 0 means
-- events are off: nothing is added (and the stream is not trimmed).
-- event(events, maxlen, field, value, ...)
local function event(events, maxlen, ...)
  if tonumber(maxlen) == 0 then return end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', ...)
end
