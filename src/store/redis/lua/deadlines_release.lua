-- Removes a claimed entry from a deadline index once its expiry is
-- announced, unless it was scored anew since (the verification's expiry
-- moved later). KEYS: the index. ARGV: the entry, the claim's score.
-- Replies 1 when removed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
