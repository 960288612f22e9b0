-- Store::record_delivery (Verification::record_delivery). ARGV: now, the
-- provider's reference, its status word, that word's rank, what it means
-- here ('' when unknown) and the failure reason to record ('' for none),
-- the resend cooldown (ms) and the send budget.
-- Attempts keep the rank of their provider status. When the latest send
-- is reported failed or undelivered, the next fallback step falls due as
-- soon as the resend wait allows (Verification::hasten_fallback).
-- Replies nil or { 1 when it changed anything else 0, verification }.
local now = num(ARGV[1])
local reference, status, rank = ARGV[2], ARGV[3], num(ARGV[4])
local v = load(KEYS[1])
if not v or purged(v, now) then
  return nil
end
local attempts = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #attempts, 1, -1 do
  local attempt = cjson.decode(attempts[i])
  if attempt.reference == reference then
    local held = attempt.rank or 0
    local forward = rank > held or (held == 0 and attempt.provider_status == nil)
    if not forward or attempt.provider_status == status then
      return { 0, reply(v, KEYS[2]) }
    end
    attempt.provider_status = status
    attempt.rank = rank
    if ARGV[5] ~= '' then
      attempt.status = ARGV[5]
    end
    if ARGV[6] ~= '' then
      attempt.error_reason = ARGV[6]
    end
    redis.call('LSET', KEYS[2], i - 1, cjson.encode(attempt))
    local failed = attempt.status == 'failed' or attempt.status == 'undelivered'
    local next_at = step_at(v)
    if i == #attempts and failed and next_at and now < num(v.expires_at) then
      local sends_made = math.max(num(ARGV[8]) - num(v.sends_remaining), 0)
      local cooled = now
      if v.last_send_at then
        cooled = math.max(now, num(v.last_send_at) + resend_wait(num(ARGV[7]), sends_made))
      end
      if cooled < next_at then
        v.fallback_at = string.format('%d', cooled)
        -- save publishes the change.
        save(KEYS[1], KEYS[2], v, now, true)
        return { 1, reply(v, KEYS[2]) }
      end
    end
    redis.call('PUBLISH', v.watch, v.status)
    return { 1, reply(v, KEYS[2]) }
  end
end
return { 0, reply(v, KEYS[2]) }
