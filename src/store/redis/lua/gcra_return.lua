-- One cell given back to a shared budget (budget.lua). KEYS: the budget.
-- ARGV: now, period (ms).
give_back(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return 0
