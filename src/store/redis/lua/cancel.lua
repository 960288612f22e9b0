-- Store::cancel (Verification::cancel). ARGV: now. Replies nil or
-- { 1 when this call canceled it else 0, verification }.
local now = num(ARGV[1])
local v = load(KEYS[1])
if not v or purged(v, now) then
  return nil
end
local changed = settle(v, now)
local canceled = 0
if v.status == 'pending' then
  v.status = 'canceled'
  canceled = 1
  changed = true
end
save(KEYS[1], KEYS[2], v, now, changed)
return { canceled, reply(v, KEYS[2]) }
