-- A replica stopping gives its deadline buckets up at once, so the others
-- take them at their next scan rather than when the leases lapse. KEYS:
-- the leases and the replicas alive (deadlines_lease.lua). ARGV: the
-- replica's owner id. Replies how many buckets it gave up.
local flat = redis.call('HGETALL', KEYS[1])
local mine = {}
for i = 1, #flat, 2 do
  if string.match(flat[i + 1], '^(%S+) ') == ARGV[1] then
    mine[#mine + 1] = flat[i]
  end
end
if #mine > 0 then
  redis.call('HDEL', KEYS[1], unpack(mine))
end
redis.call('ZREM', KEYS[2], ARGV[1])
return #mine
