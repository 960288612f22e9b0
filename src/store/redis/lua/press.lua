-- Store::press (Verification::press). ARGV: now, the SHA-256 (hex) of the
-- webhook's token, its CallSid, the menu ('main' or 'fraud'), the digits,
-- the most re-prompts a call may use, the step the gather answers (the
-- call's presses when it was asked), then the key id and MAC (hex) of the
-- code a read-aloud call says if this press reveals one, and '1' when
-- verifyd WAITs for replicas after this script (prelude.lua's `approve`)
-- else ''. Any key but the fraud menu's on a call whose approval is
-- unacknowledged approves it again. Replies nil when
-- there is no such verification, { 'forbidden', verification } when the
-- token or CallSid is not its live call's or the step is not the one it
-- waits for (a replayed press), else { outcome, verification }.
local now = num(ARGV[1])
local menu, digits, max_reprompts = ARGV[4], ARGV[5], num(ARGV[6])
local v = load(KEYS[1])
if not v or purged(v, now) then
  return nil
end
local presses = num(v.call_presses or '0')
if not (same(v.call_token, ARGV[2]) and v.call_sid == ARGV[3])
    or presses ~= num(ARGV[7]) or presses >= 255 then
  return { 'forbidden', reply(v, KEYS[2]) }
end

local function reprompt(outcome)
  local used = num(v.call_reprompts or '0')
  if used >= max_reprompts then
    return 'hangup'
  end
  v.call_reprompts = tostring(used + 1)
  return outcome
end

local durable = ARGV[10] == '1'

local function press()
  settle(v, now)
  -- An approval awaiting its replicas is still pending to the user, who
  -- was told nothing: the menus work as for one.
  if v.status ~= 'pending' and not v.unacked then
    return 'not_pending'
  end
  -- Acted on: the next gather waits for the next step (at 255, none).
  v.call_presses = tostring(presses + 1)
  if menu == 'fraud' then
    if digits == '#' then
      v.status = 'denied'
      v.unacked = false
      return 'denied'
    end
    -- Going back is a round of the menu like any re-prompt.
    return reprompt('back_to_main')
  end
  -- The lone key that opens the fraud report.
  if digits == '0' then
    return 'fraud_menu'
  end
  -- Any other key asks the replicas again (prelude.lua's `approve`).
  if v.unacked then
    approve(v, durable)
    return 'approved'
  end
  -- No key before the gather ended: ask again, spending no attempt.
  if digits == '' then
    return reprompt('reprompt')
  end
  local mode = v.voice_mode or 'confirm'
  if mode == 'confirm' then
    if digits == '#' then
      approve(v, durable)
      return 'approved'
    end
    return reprompt('reprompt')
  elseif mode == 'match' then
    if v.match_digits and digits == v.match_digits then
      approve(v, durable)
      return 'approved'
    end
    -- A guess at the digits costs an attempt like a wrong code.
    spend_attempt(v)
    if v.status ~= 'pending' then
      return 'hangup'
    end
    return reprompt('wrong_digits')
  end
  -- A read-aloud call says a new code for any key, swapped in here: each
  -- spends a re-prompt, the first answering the opening question.
  local used = num(v.call_reprompts or '0')
  if used > max_reprompts then
    return 'hangup'
  end
  v.call_reprompts = tostring(used + 1)
  -- (record.rs reveal_code) A fallback step's call holds no code of its
  -- own yet: the first it says goes beside the previous step's.
  if v.code_mac then
    v.unconfirmed_key = false
    v.unconfirmed_mac = false
  end
  v.code_key = ARGV[8]
  v.code_mac = ARGV[9]
  return 'reveal'
end

local before = { v.status, v.checks_remaining, v.call_reprompts, v.call_presses, v.unacked }
local outcome = press()
local changed = v.status ~= before[1] or v.checks_remaining ~= before[2]
  or v.call_reprompts ~= before[3] or v.call_presses ~= before[4]
  or v.unacked ~= before[5]
save(KEYS[1], KEYS[2], v, now, changed)
return { outcome, reply(v, KEYS[2]) }
