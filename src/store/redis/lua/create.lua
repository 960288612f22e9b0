-- Store::create: a new verification, in one step with what bounds it, and
-- the one it supersedes. KEYS: the pending slot of (tenant, destination,
-- purpose, extension), the candidate's hash and attempts list, the destination's start
-- budget, the destination's recent starts (RecentStarts: a hash of `last`
-- and `count`), the destination's block (block.lua), the destination's
-- history (ids by creation, for the operators' listing). ARGV: now, the key
-- prefix of this tenant's verifications in
-- this shard, the resend cooldown and the starts window (ms: the longest
-- a code can live, Policy::starts_window), the key of the
-- destination's failed-check budget (check.lua), the start budget's period
-- (ms) and burst (two empty strings: take none), then the candidate's
-- fields as (name, value) pairs. The candidate comes with its first send
-- reserved (verifyd ran Verification::reserve_send on it, as the memory
-- store does).
-- Replies { 'created', the superseded verification or '' },
-- { 'blocked', until }, { 'too_soon', retry_at } or { 'limited', ms until a
-- cell frees up }, the last three with nothing changed.
local now = num(ARGV[1])
-- How many of a destination's verifications its history keeps (the most
-- ListDestinationVerifications returns).
local HISTORY_KEPT = 50
local prefix = ARGV[2]
local cooldown = num(ARGV[3])
local ttl = num(ARGV[4])
local check_budget = ARGV[5]

-- Policy::resend_wait: the cooldown doubles with each one in a row, at
-- most MAX_RESEND_DOUBLINGS (3) times.
local function wait_after(count)
  local doublings = math.min(math.max(count - 1, 0), 3)
  return cooldown * 2 ^ doublings
end

-- A block after a fraud report refuses first, with nothing spent, where
-- the gap and the budget refuse too.
local blocked = num(redis.call('GET', KEYS[6]) or '0')
if blocked > now then
  return { 'blocked', tostring(blocked) }
end

-- RecentStarts::admit; Redis forgets the run at RecentStarts::forgotten_at.
local last = redis.call('HMGET', KEYS[5], 'last', 'count')
local count = 1
if last[1] then
  local retry_at = num(last[1]) + wait_after(num(last[2]))
  if now < retry_at then
    return { 'too_soon', tostring(retry_at) }
  end
  if now < num(last[1]) + math.max(ttl, wait_after(num(last[2]))) then
    count = num(last[2]) + 1
  end
end
-- The budget after the gap: a start the gap refuses spends nothing (the
-- memory store's rate limiter gives its cell back).
if ARGV[6] ~= '' then
  local wait = take(KEYS[4], now, num(ARGV[6]), num(ARGV[7]))
  if wait > 0 then
    return { 'limited', tostring(wait) }
  end
end
-- Verification::supersede on the one still pending, if any.
local superseded = ''
local pending_id = redis.call('GET', KEYS[1])
if pending_id then
  -- Its keys are named here, from the prefix: its id carries the same
  -- shard as the slot key, so they hash to the same slot and the script
  -- stays within one slot on Redis Cluster.
  local key = prefix .. 'v:' .. pending_id
  local attempts_key = prefix .. 'a:' .. pending_id
  local v = load(key)
  if v and not purged(v, now) then
    local changed = settle(v, now)
    -- An approval awaiting its replicas was told to no one: superseded.
    if v.status == 'pending' or v.unacked then
      v.status = 'superseded'
      v.unacked = false
      changed = true
    end
    save(key, attempts_key, v, now, changed)
    if changed and v.status == 'superseded' then
      superseded = reply(v, attempts_key)
    end
  end
  redis.call('DEL', KEYS[1])
end

local v = {}
for i = 8, #ARGV, 2 do
  v[ARGV[i]] = ARGV[i + 1]
end
v.pending_key = KEYS[1]
v.history_key = KEYS[7]
v.check_budget = check_budget
redis.call('SET', KEYS[1], v.id)
save(KEYS[2], KEYS[3], v, now, true)
-- The destination's newest verifications, kept as long as any of them
-- (save() extends it as an expiry moves, by the name the hash keeps).
redis.call('ZADD', KEYS[7], now, v.id)
redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -(HISTORY_KEPT + 1))
local kept = math.max(num(v.expires_at) + num(v.retention) - now, 1)
if redis.call('PTTL', KEYS[7]) < kept then
  redis.call('PEXPIRE', KEYS[7], kept)
end
redis.call('HSET', KEYS[5], 'last', tostring(now), 'count', tostring(count))
redis.call('PEXPIRE', KEYS[5], math.max(math.floor(math.max(ttl, wait_after(count))), 1))
return { 'created', superseded }
