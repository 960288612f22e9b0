-- Store::block: keeps the later of the existing and the new end. ARGV:
-- until (ms), now (ms).
local untl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > untl then
  untl = current
end
redis.call('SET', KEYS[1], tostring(untl), 'PX', math.max(untl - now, 1))
return 1
