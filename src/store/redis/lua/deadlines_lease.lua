-- The deadline index's buckets, shared among the replicas by lease
-- (deadlines.rs). KEYS: the leases (a hash: bucket -> "owner until") and
-- the replicas alive (a sorted set: owner scored by when its heartbeat
-- lapses), both under one hash tag. ARGV: this replica's owner id, now,
-- the lease (ms), the number of buckets. Each replica keeps its fair share
-- (the buckets over the replicas alive, rounded up): it renews what it
-- holds up to that share, gives up the rest, and takes lapsed or free
-- buckets up to it. Replies the buckets it holds now.
local me, now, lease, buckets = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now + lease, me)
-- A heartbeat or lease further ahead than one lease came from a clock
-- that ran ahead: it counts as lapsed, or a replica gone with such a
-- clock would hold its buckets for as long as its clock was off.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '(' .. (now + lease), '+inf')
local share = math.ceil(buckets / redis.call('ZCARD', KEYS[2]))

local mine, free = {}, {}
local held = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local owner, untl = string.match(flat[i + 1], '^(%S+) (%d+)$')
  held[tonumber(flat[i])] = { owner, tonumber(untl or '0') }
end
for b = 0, buckets - 1 do
  local h = held[b]
  local lapsed = not h or h[2] <= now or h[2] > now + lease
  if h and h[1] == me and not lapsed then
    mine[#mine + 1] = b
  elseif lapsed then
    free[#free + 1] = b
  end
end

local kept = {}
for _, b in ipairs(mine) do
  if #kept < share then
    kept[#kept + 1] = b
  else
    redis.call('HDEL', KEYS[1], b)
  end
end
-- Lapsed buckets first in a different order on each replica, so two
-- replicas taking at once take different ones.
local start = #free > 0 and (tonumber(string.sub(redis.sha1hex(me .. now), 1, 6), 16) % #free) or 0
for i = 0, #free - 1 do
  if #kept >= share then
    break
  end
  kept[#kept + 1] = free[(start + i) % #free + 1]
end
local until_ = now + lease
local set = {}
for _, b in ipairs(kept) do
  set[#set + 1] = b
  set[#set + 1] = me .. ' ' .. until_
end
if #set > 0 then
  redis.call('HSET', KEYS[1], unpack(set))
end
-- Cleaning up only, on Redis's clock: gone once no replica has renewed
-- for three leases.
redis.call('PEXPIRE', KEYS[1], 3 * lease)
redis.call('PEXPIRE', KEYS[2], 3 * lease)
return kept
