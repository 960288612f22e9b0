-- Store::check (Verification::check), with the destination's failed-check
-- budget (budget.lua) taken in the same step. ARGV: now, the budget's
-- period (ms) and burst, or two empty strings when the caller took the
-- cell itself, '1' when verifyd WAITs for replicas after this script
-- (prelude.lua's `approve`) else '', then (key id, MAC hex) pairs: the
-- typed code's hash under each key still accepted, compared with the
-- stored codes' (code_mac, and unconfirmed_mac after a send whose outcome
-- is unknown).
-- Replies nil when there is no such verification, else
-- { outcome, detail, verification ('' when limited or unbudgeted) },
-- outcome one of
--   'approved' (or approved again while unacknowledged), 'rejected',
--   'not_pending' (nothing is taken),
--   'limited': the budget is spent; detail is the milliseconds until a
--     cell frees up, and nothing else changes,
--   'unbudgeted': the verification predates `check_budget` (resend.lua
--     names it now); the caller takes the cell and asks again without one.
--   'unacknowledged': another code than the one an approval awaiting its
--     replicas was made with; only a budget cell is taken.
local now = num(ARGV[1])
local v, changed = current(now)
if not v then
  return nil
end
local outcome, detail = nil, 0
local budgeted = ARGV[2] ~= ''
local durable = ARGV[4] == '1'
-- The last accepted code, and a later send's whose outcome is unknown
-- (complete.lua): both are compared every time.
local function matches()
  local found = false
  for i = 5, #ARGV, 2 do
    if v.code_key == ARGV[i] and same(v.code_mac, ARGV[i + 1]) then
      found = true
    end
    if v.unconfirmed_key == ARGV[i] and same(v.unconfirmed_mac, ARGV[i + 1]) then
      found = true
    end
  end
  return found
end
if v.unacked then
  -- The verification was approved: the same code asks the replicas again;
  -- another spends no attempt (there are none to spend) but takes a cell
  -- of the destination's budget, as any wrong code does.
  if matches() then
    approve(v, durable)
    outcome = 'approved'
    changed = true
  else
    local wait = budgeted and v.check_budget and take(v.check_budget, now, num(ARGV[2]), num(ARGV[3])) or 0
    if wait > 0 then
      outcome, detail = 'limited', wait
    else
      outcome = 'unacknowledged'
    end
  end
elseif v.status ~= 'pending' then
  outcome = 'not_pending'
elseif budgeted and not v.check_budget then
  outcome = 'unbudgeted'
else
  local wait = budgeted and take(v.check_budget, now, num(ARGV[2]), num(ARGV[3])) or 0
  if wait > 0 then
    outcome, detail = 'limited', wait
  else
    if matches() then
      approve(v, durable)
      outcome = 'approved'
    else
      spend_attempt(v)
      outcome = 'rejected'
    end
    changed = true
  end
end
if outcome == 'limited' or outcome == 'unbudgeted' or outcome == 'unacknowledged' then
  -- Nothing changed, and the caller needs no verification.
  return { outcome, detail, '' }
end
save(KEYS[1], KEYS[2], v, now, changed)
return { outcome, detail, reply(v, KEYS[2]) }
