-- Store::abandon_idempotent: frees a key whose start failed, unless it
-- already succeeded.
if redis.call('HGET', KEYS[1], 'state') == 'in_flight' then
  redis.call('DEL', KEYS[1])
end
return 1
