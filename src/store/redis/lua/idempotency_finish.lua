-- Store::finish_idempotent. KEYS: the record. ARGV: now, the response to
-- replay, the window (ms).
if redis.call('EXISTS', KEYS[1]) == 1 then
  local window = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[2],
    'expires_at', tostring(tonumber(ARGV[1]) + window))
  redis.call('PEXPIRE', KEYS[1], window)
end
return 1
