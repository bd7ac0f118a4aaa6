-- lib/permitted: a script whose effects take several commands checks first that its caller may run each of
-- them, because Redis does not roll a script back: an ACL that refuses a later command would leave the earlier
-- effects in place (a job re-added but its old entry kept, say).
-- refused(calls) -> nil, or an error reply naming the first call (a table: command and arguments) the caller may
-- not run
local function refused(calls)
  for _, c in ipairs(calls) do
    if not redis.acl_check_cmd(unpack(c)) then
      return redis.error_reply('NOPERM rill: this user may not run ' .. c[1] .. ' on ' .. tostring(c[2]))
    end
  end
  return nil
end
