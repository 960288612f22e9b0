-- Store::begin_idempotent. KEYS: the record. ARGV: now, the request's
-- fingerprint (hex), the lease and the window (ms). Replies 'started',
-- 'mismatch', 'in_flight' or { 'replay', response }.
local now = tonumber(ARGV[1])
local fingerprint, lease, window = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local record = redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'lease_until', 'expires_at', 'response')
local function start()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'fingerprint', fingerprint, 'state', 'in_flight',
    'lease_until', tostring(now + lease), 'expires_at', tostring(now + window))
  redis.call('PEXPIRE', KEYS[1], window)
  return 'started'
end
-- Absent, or past its window: the key is free again.
if not record[1] or now >= tonumber(record[4]) then
  return start()
end
if record[1] ~= fingerprint then
  return 'mismatch'
end
if record[2] == 'done' then
  return { 'replay', record[5] }
end
if tonumber(record[3]) > now then
  return 'in_flight'
end
-- The earlier holder gave up (or its replica died): take over.
return start()
