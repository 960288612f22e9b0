-- Store::get (reading settles expiry, so a reader never sees a pending
-- verification past its time). ARGV: now. Replies nil or { verification }.
local now = num(ARGV[1])
local v, changed = current(now)
if not v then
  return nil
end
save(KEYS[1], KEYS[2], v, now, changed)
return { reply(v, KEYS[2]) }
