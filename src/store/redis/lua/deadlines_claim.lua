-- Claims the due entries of deadline indexes (prelude.lua's
-- `index_deadline`). KEYS: the indexes (a bucket's 256 on one Redis; one
-- on a cluster, where each is in its own slot). ARGV: now, the claim
-- (ms), the most entries to claim per index. Each due entry is scored
-- anew at now + claim: the replica that claimed it announces the expiry
-- and then releases it (deadlines_release.lua); one that dies first
-- leaves it due again when the claim runs out. Replies { the claim's
-- score, { index's position in KEYS, "id tenant", ... } }.
local now = tonumber(ARGV[1])
local claimed = now + tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
  for _, member in ipairs(due) do
    redis.call('ZADD', key, 'XX', claimed, member)
    out[#out + 1] = tostring(i)
    out[#out + 1] = member
  end
end
return { claimed, out }
