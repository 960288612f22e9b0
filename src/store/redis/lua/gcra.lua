-- One cell from a shared budget (budget.lua). KEYS: the budget. ARGV: now,
-- period (ms), burst. Replies 0 when the cell was taken, else the
-- milliseconds until one frees up.
return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
