-- Store::complete_send (Verification::record_send, then the code swap).
-- ARGV: now, code ttl (ms), the send's outcome ('accepted', 'unknown' or
-- 'refused'),
-- the send's channel, voice mode, locale, new code key id and MAC, call
-- token hash and CallSid, match digits to use if the verification needs
-- some and has none ('' for none of these), '1' when the send is a
-- fallback step's (else ''), then each attempt as JSON.
-- Replies nil or { verification }.
local now = num(ARGV[1])
local ttl = num(ARGV[2])
local outcome = ARGV[3]
local function opt(value)
  if value == '' then
    return false
  end
  return value
end

local v = load(KEYS[1])
if not v or purged(v, now) then
  return nil
end
local was_pending = v.status == 'pending'
local first_send = v.accepted_once ~= '1'
v.sending_until = false
local fallback_step = ARGV[12] == '1'
for i = 13, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  began_attempts = true
end
if not settle(v, now) and v.status == 'pending' then
  if outcome == 'unknown' then
    -- It may have reached the user: its code checks beside the last
    -- accepted one (replacing an earlier unknown one) until the next
    -- accepted send, and the user gets the code's full window.
    v.expires_at = tostring(now + ttl)
    if was_pending and ARGV[8] ~= '' then
      v.unconfirmed_key = ARGV[7]
      v.unconfirmed_mac = ARGV[8]
    end
  elseif outcome == 'accepted' then
    v.accepted_once = '1'
    -- A resend may switch to number matching; the digits are made once
    -- and kept across later resends.
    if ARGV[5] == 'match' and not v.match_digits then
      v.match_digits = opt(ARGV[11])
    end
    v.channel = ARGV[4]
    v.voice_mode = opt(ARGV[5])
    v.locale = opt(ARGV[6])
    -- The new send's call, if any, replaces the previous one.
    v.call_token = opt(ARGV[9])
    v.call_sid = opt(ARGV[10])
    v.call_reprompts = v.call_token and '0'
    v.call_presses = v.call_token and '0'
    v.expires_at = tostring(now + ttl)
    -- A fallback step's code is checked beside the previous step's (the
    -- user may still be reading that one), in place of any unknown
    -- send's; a step that delivers none (a call) keeps the previous
    -- step's checking.
    if was_pending and fallback_step then
      -- (record.rs add_step_code) The previous step's code moves beside,
      -- unless there is none of its own (an unconfirmed one, perhaps,
      -- stays); the new one, or none yet for a call, takes its place.
      if v.code_mac then
        v.unconfirmed_key = v.code_key
        v.unconfirmed_mac = v.code_mac
        v.code_key = opt(ARGV[7])
        v.code_mac = opt(ARGV[8])
      elseif ARGV[8] ~= '' then
        v.code_key = ARGV[7]
        v.code_mac = ARGV[8]
      end
    -- The user now has this send's code, or none after a press-# call.
    elseif was_pending then
      v.code_key = opt(ARGV[7])
      v.code_mac = opt(ARGV[8])
      v.unconfirmed_key = false
      v.unconfirmed_mac = false
    end
  elseif first_send then
    v.status = 'failed'
  end
end
save(KEYS[1], KEYS[2], v, now, true)
return { reply(v, KEYS[2]) }
