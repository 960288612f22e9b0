-- Ends an approval's wait for its replicas (prelude.lua's `approve`),
-- once a WAIT has covered it: it is approved to every reader now, its
-- code's hash goes, and watchers hear of it. ARGV: now. Replies nil when
-- there is no such verification, else { 1 when this call ended the wait
-- else 0 (another ended it first: the caller is not told of it twice),
-- verification }.
local now = num(ARGV[1])
local v = load(KEYS[1])
if not v or purged(v, now) then
  return nil
end
if not v.unacked then
  return { 0, reply(v, KEYS[2]) }
end
v.unacked = false
save(KEYS[1], KEYS[2], v, now, true)
return { 1, reply(v, KEYS[2]) }
