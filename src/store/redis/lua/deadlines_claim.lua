-- Claims the due entries of one hash tag's deadline index
-- (prelude.lua's `index_deadline`). KEYS: the index. ARGV: now, the claim
-- (ms), the most entries to claim. Each due entry is scored anew at
-- now + claim: the replica that claimed it announces the expiry and then
-- releases it (deadlines_release.lua); one that dies first leaves it due
-- again when the claim runs out. Replies { the claim's score, { "id
-- tenant", ... } }.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = now + tonumber(ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', claimed, member)
end
return { claimed, due }
