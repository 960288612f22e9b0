-- Store::reserve_resend (Verification::reserve_send on a verification by
-- id), with one cell of the destination's start budget (budget.lua) taken
-- first. KEYS: the verification's hash and attempts list, the
-- destination's start budget. ARGV: now, the resend cooldown and send
-- lease (ms), the send budget, the start budget's period (ms) and burst
-- (two empty strings: take none), the key of the destination's
-- failed-check budget (check.lua).
-- Replies nil when there is no such verification, { 'granted',
-- verification }, { 'not_pending' | 'cooldown' | 'send_limit', detail,
-- verification }, or { 'limited', ms until a cell frees up } with nothing
-- changed.
local now = num(ARGV[1])
local cooldown = num(ARGV[2])
local lease = num(ARGV[3])
local max_sends = num(ARGV[4])

local v, changed = current(now)
if not v then
  return nil
end
refuse_if_unacknowledged(v)
if v.status ~= 'pending' then
  save(KEYS[1], KEYS[2], v, now, changed)
  return { 'not_pending', v.status, reply(v, KEYS[2]) }
end
-- The budget goes first, as for a start: a resend refused by its cooldown
-- has spent its cell too.
if ARGV[5] ~= '' then
  local wait = take(KEYS[3], now, num(ARGV[5]), num(ARGV[6]))
  if wait > 0 then
    return { 'limited', tostring(wait) }
  end
end

-- Policy::resend_wait: the cooldown doubles with each resend, at most
-- MAX_RESEND_DOUBLINGS (3) times.
local function resend_wait(sends_made)
  local doublings = math.min(math.max(sends_made - 1, 0), 3)
  return cooldown * 2 ^ doublings
end

-- Verification::reserve_send, past the status check above.
local function reserve_send()
  if v.sending_until and now < num(v.sending_until) then
    return 'cooldown', v.sending_until
  end
  if v.last_send_at then
    local sends_made = math.max(max_sends - num(v.sends_remaining), 0)
    local retry_at = num(v.last_send_at) + resend_wait(sends_made)
    if now < retry_at then
      return 'cooldown', tostring(retry_at)
    end
  end
  if num(v.sends_remaining) == 0 then
    return 'send_limit', ''
  end
  v.sends_remaining = tostring(num(v.sends_remaining) - 1)
  v.last_send_at = tostring(now)
  v.sending_until = tostring(now + lease)
  return nil
end

-- Written before verifications named their budget: name it now, so its
-- checks take one step from here on.
if not v.check_budget then
  v.check_budget = ARGV[7]
  changed = true
end
local refused, detail = reserve_send()
save(KEYS[1], KEYS[2], v, now, changed or not refused)
if refused then
  return { refused, detail, reply(v, KEYS[2]) }
end
return { 'granted', reply(v, KEYS[2]) }
