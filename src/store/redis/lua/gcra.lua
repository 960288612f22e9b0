-- One cell from a GCRA budget shared by every replica: `burst` at once,
-- then one more every `period`. KEYS: the budget's theoretical arrival
-- time. ARGV: now, period (ms), burst. Replies 0 when the cell was taken,
-- else the milliseconds until one frees up (nothing is taken then).
local now, period, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local next_tat = tat + period
local allowed_at = next_tat - period * burst
if now < allowed_at then
  return allowed_at - now
end
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.max(next_tat - now, 1))
return 0
