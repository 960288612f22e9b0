-- A GCRA budget shared by every replica: `burst` cells at once, then one
-- more every `period` (ms). The key holds the theoretical arrival time.
-- `take` spends one cell and returns 0, or returns the milliseconds until
-- one frees up and spends nothing.
local function take(key, now, period, burst)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  local next_tat = tat + period
  local allowed_at = next_tat - period * burst
  if now < allowed_at then
    return allowed_at - now
  end
  redis.call('SET', key, tostring(next_tat), 'PX', math.max(next_tat - now, 1))
  return 0
end
-- `wait` says what `take` would, and takes nothing: 0 when a cell is free,
-- else the milliseconds until one is.
local function wait(key, now, period, burst)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  return math.max(tat + period - period * burst - now, 0)
end
-- `give_back` returns one cell `take` spent: the budget is as if that take
-- had not happened, or full, whichever comes first.
local function give_back(key, now, period)
  local tat = tonumber(redis.call('GET', key) or '0')
  local back = tat - period
  if back <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, tostring(back), 'PX', math.max(back - now, 1))
  end
end
