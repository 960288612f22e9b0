-- Store::get (reading settles expiry, so a reader never sees a pending
-- verification past its time). ARGV: now. Replies nil or { verification }.
local now = num(ARGV[1])
local v = load(KEYS[1])
if not v or purged(v, now) then
  return nil
end
save(KEYS[1], KEYS[2], v, now, settle(v, now))
return { reply(v, KEYS[2]) }
