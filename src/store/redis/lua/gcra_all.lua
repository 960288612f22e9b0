-- Cells from several budgets of one slot, all or none (budget.lua): a
-- tenant's own budgets, taken in one round trip. KEYS: the budgets. ARGV:
-- now, then each budget's period (ms) and burst. Replies { 0, 0 } when
-- every cell was taken, else { i, ms }: the first budget (from 1) that is
-- spent and the milliseconds until a cell frees up, with nothing taken.
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local w = wait(KEYS[i], now, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
  if w > 0 then
    return { i, w }
  end
end
for i = 1, #KEYS do
  take(KEYS[i], now, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
end
return { 0, 0 }
