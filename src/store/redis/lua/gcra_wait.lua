-- How long until a shared budget (budget.lua) has a cell, taking nothing.
-- KEYS: the budget. ARGV: now, period (ms), burst. Replies 0 when a cell is
-- free, else the milliseconds until one is.
return wait(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
