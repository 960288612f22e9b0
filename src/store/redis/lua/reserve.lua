-- Store::reserve_send, with one cell of the destination's start budget
-- (budget.lua) taken first. KEYS: the pending slot of (tenant,
-- destination, purpose), the candidate's hash and attempts list, the
-- destination's start budget. ARGV: now, the key prefix of this tenant's
-- verifications in this shard, the resend cooldown and send lease (ms),
-- the send budget, the key of the destination's failed-check budget
-- (check.lua), the start budget's period (ms) and burst (two empty strings:
-- take none), then the candidate's fields as (name, value) pairs.
-- The candidate comes with its first send reserved (verifyd ran
-- Verification::reserve_send on it, as the memory store does).
-- Replies { 'granted', 1, '' } when the candidate became the verification
-- (verifyd has it already), else { 'granted', 0, verification } or
-- { 'cooldown', retry_at } / { 'send_limit' } with the verification, or
-- { 'limited', ms until a cell frees up, '' } with nothing changed.
local now = num(ARGV[1])
local prefix = ARGV[2]
local cooldown = num(ARGV[3])
local lease = num(ARGV[4])
local max_sends = num(ARGV[5])
local check_budget = ARGV[6]

-- The budget goes first, as it did when it was a script of its own: a
-- resend refused by its cooldown has spent its cell too.
if ARGV[7] ~= '' then
  local wait = take(KEYS[4], now, num(ARGV[7]), num(ARGV[8]))
  if wait > 0 then
    return { 'limited', wait, '' }
  end
end
-- Policy::resend_wait: the cooldown doubles with each resend, at most
-- MAX_RESEND_DOUBLINGS (3) times.
local function resend_wait(sends_made)
  local doublings = math.min(math.max(sends_made - 1, 0), 3)
  return cooldown * 2 ^ doublings
end

-- Verification::reserve_send
local function reserve_send(v)
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

local pending_id = redis.call('GET', KEYS[1])
if pending_id then
  -- The pending verification's keys are named here, from the prefix: its id
  -- carries the same shard as the slot key, so they hash to the same slot
  -- and the script stays within one slot on Redis Cluster.
  local key = prefix .. 'v:' .. pending_id
  local attempts_key = prefix .. 'a:' .. pending_id
  local v = load(key)
  if v and not purged(v, now) then
    local changed = settle(v, now)
    if v.status == 'pending' then
      -- Written before verifications named their budget: name it now, so
      -- its checks take one step from here on.
      if not v.check_budget then
        v.check_budget = check_budget
        changed = true
      end
      local refused, retry_at = reserve_send(v)
      save(key, attempts_key, v, now, changed or not refused)
      if refused then
        return { refused, retry_at, reply(v, attempts_key) }
      end
      return { 'granted', 0, reply(v, attempts_key) }
    end
    save(key, attempts_key, v, now, changed)
  end
  redis.call('DEL', KEYS[1])
end

local v = {}
for i = 9, #ARGV, 2 do
  v[ARGV[i]] = ARGV[i + 1]
end
v.pending_key = KEYS[1]
v.check_budget = check_budget
redis.call('SET', KEYS[1], v.id)
save(KEYS[2], KEYS[3], v, now, true)
return { 'granted', 1, '' }
