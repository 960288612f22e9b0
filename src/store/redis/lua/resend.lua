-- Store::reserve_resend (Verification::reserve_send on a verification by
-- id), with one cell of the destination's start budget (budget.lua) taken
-- first. KEYS: the verification's hash and attempts list, the
-- destination's start budget. ARGV: now, the resend cooldown and send
-- lease (ms), the send budget, the start budget's period (ms) and burst
-- (two empty strings: take none), the key of the destination's
-- failed-check budget (check.lua), and the fallback step the workflow must
-- stand at ('' for a resend the caller asked for).
-- A caller's resend ends the automatic fallback once granted. A fallback
-- step (Verification::reserve_step) is claimed only while the
-- verification is pending, at that step and due (nil otherwise, nothing
-- changed); a claimed step moves the workflow on, and one that may not
-- send (refused or limited) ends it.
-- Replies nil when there is no such verification, { 'granted',
-- verification }, { 'not_pending' | 'cooldown' | 'send_limit', detail,
-- verification }, or { 'limited', ms until a cell frees up } with nothing
-- changed.
local now = num(ARGV[1])
local cooldown = num(ARGV[2])
local lease = num(ARGV[3])
local max_sends = num(ARGV[4])

local step = ARGV[8]

local v, changed = current(now)
if not v then
  return nil
end
-- Verification::step_due.
if step ~= '' then
  local due = step_at(v)
  if v.unacked or not due or due > now or v.fallback_step ~= step then
    save(KEYS[1], KEYS[2], v, now, changed)
    return nil
  end
end
refuse_if_unacknowledged(v)
if v.status ~= 'pending' then
  save(KEYS[1], KEYS[2], v, now, changed)
  return { 'not_pending', v.status, reply(v, KEYS[2]) }
end

-- Fallback::advance, or Fallback::end when the step may not send.
local function move_on(granted)
  if step == '' then
    if granted then
      v.fallback_at = false
    end
    return
  end
  if not granted then
    v.fallback_at = false
    return
  end
  local next_step = num(step) + 1
  v.fallback_step = tostring(next_step)
  local _, commas = string.gsub(v.fallback, ',', '')
  if next_step < commas then
    v.fallback_at = tostring(now + num(v.fallback_timeout))
  else
    v.fallback_at = false
  end
end

-- The budget goes first, as for a start: a resend refused by its cooldown
-- has spent its cell too.
if ARGV[5] ~= '' then
  local wait = take(KEYS[3], now, num(ARGV[5]), num(ARGV[6]))
  if wait > 0 then
    if step ~= '' then
      move_on(false)
      save(KEYS[1], KEYS[2], v, now, true)
    end
    return { 'limited', tostring(wait) }
  end
end

-- Verification::reserve_send, past the status check above.
local function reserve_send()
  if v.sending_until and now < num(v.sending_until) then
    return 'cooldown', v.sending_until
  end
  if v.last_send_at then
    local sends_made = math.max(max_sends - num(v.sends_remaining), 0)
    local retry_at = num(v.last_send_at) + resend_wait(cooldown, sends_made)
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
if v.fallback_at and (step ~= '' or not refused) then
  move_on(not refused)
  changed = true
end
save(KEYS[1], KEYS[2], v, now, changed or not refused)
if refused then
  return { refused, detail, reply(v, KEYS[2]) }
end
return { 'granted', reply(v, KEYS[2]) }
