-- Store::cancel (Verification::cancel). ARGV: now. Replies nil or
-- { 1 when this call canceled it else 0, verification }.
local now = num(ARGV[1])
local v, changed = current(now)
if not v then
  return nil
end
local canceled = 0
-- An approval awaiting its replicas was told to no one: it cancels.
if v.status == 'pending' or v.unacked then
  v.status = 'canceled'
  v.unacked = false
  canceled = 1
  changed = true
end
save(KEYS[1], KEYS[2], v, now, changed)
return { canceled, reply(v, KEYS[2]) }
