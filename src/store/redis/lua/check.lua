-- Store::check. ARGV: now, then (key id, MAC hex) pairs: the typed code's
-- hash under each key still accepted. Replies nil when there is no such
-- verification, else { outcome, verification }.
local now = num(ARGV[1])
local v, changed = current(now)
if not v then
  return nil
end
local outcome
if v.status ~= 'pending' then
  outcome = 'not_pending'
else
  local matches = false
  for i = 2, #ARGV, 2 do
    if v.code_key == ARGV[i] and same(v.code_mac, ARGV[i + 1]) then
      matches = true
    end
  end
  if matches then
    v.status = 'approved'
    outcome = 'approved'
  else
    spend_attempt(v)
    outcome = 'rejected'
  end
  changed = true
end
save(KEYS[1], KEYS[2], v, now, changed)
return { outcome, reply(v, KEYS[2]) }
