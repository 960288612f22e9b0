-- Store::cancel (Verification::cancel). ARGV: now. Replies nil or
-- { 1 when this call canceled it else 0, verification }.
local now = num(ARGV[1])
local v, changed = current(now)
if not v then
  return nil
end
refuse_if_unacknowledged(v)
local canceled = 0
if v.status == 'pending' then
  v.status = 'canceled'
  canceled = 1
  changed = true
end
save(KEYS[1], KEYS[2], v, now, changed)
return { canceled, reply(v, KEYS[2]) }
