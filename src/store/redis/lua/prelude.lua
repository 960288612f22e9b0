-- Shared by every verification script: loading, the transitions every
-- operation starts with, and writing back. The scripts mirror the methods of
-- `Verification` (src/domain/verification.rs and voice.rs), each saying
-- which; keep the two in step (tests/api/store_parity.rs checks they agree).
--
-- A verification is a hash (KEYS[1]) of string fields, absent when the Rust
-- value is None; its send attempts are a list of JSON objects (KEYS[2]).
-- Replies carry it as one JSON text (`reply`).
-- Times are milliseconds since the Unix epoch on the service's clock, passed
-- in as ARGV[1]: Redis's own clock is used only by TTLs, which only clean up.
-- In a table loaded here, `false` marks a field to delete on save.

-- The fields each hash held when loaded, so `save` writes only what changed.
local loaded = {}
-- Set by a script that pushed send attempts: the list may be new, and
-- `save` gives it its TTL.
local began_attempts = false

local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil
  end
  local v, before = {}, {}
  for i = 1, #flat, 2 do
    v[flat[i]] = flat[i + 1]
    before[flat[i]] = flat[i + 1]
  end
  loaded[key] = before
  return v
end

local function num(value)
  return tonumber(value)
end

-- Past its retention the verification is gone, whatever Redis's TTL says:
-- the service clock decides, as the memory store's purge does.
local function purged(v, now)
  return now >= num(v.expires_at) + num(v.retention)
end

-- Verification::settle. An approval the replicas have not acknowledged
-- (`unacked`, below) is still pending to every reader, and expires as a
-- pending verification does.
local function settle(v, now)
  if (v.status == 'pending' or v.unacked) and now >= num(v.expires_at) then
    v.status = 'expired'
    v.unacked = false
    return true
  end
  return false
end

-- Durable acknowledgements (store.redis.wait_replicas): verifyd sends WAIT
-- after the script, and tells the caller of an approval only once enough
-- replicas hold it. Until then the approval is `unacked`: it reads as
-- pending, keeps its code's MAC and is not published. The same code (or
-- the call's next key) approves it again, writing `unacked` anew so that
-- the next WAIT has a write of its own connection to count;
-- acknowledge.lua ends it once a WAIT covers it. `durable` is whether
-- verifyd will WAIT (ARGV): without it an approval is acknowledged at
-- once, as one left unacknowledged by an earlier setting is.
local function approve(v, durable)
  v.status = 'approved'
  if durable then
    v.unacked = tostring(num(v.unacked or '0') + 1)
  else
    v.unacked = false
  end
end

-- Refuses a change to an approval awaiting its acknowledgement: what the
-- caller would be told could not be made to agree with what the replicas
-- hold. The caller fails closed (UNAVAILABLE).
local function refuse_if_unacknowledged(v)
  if v.unacked then
    error({ err = 'UNACKNOWLEDGED an approval awaits its replicas: check the same code again' })
  end
end

-- The verification at KEYS[1] as it stands at `now`, expiry settled, and
-- whether settling changed it; nil when there is none (or it is past its
-- retention).
local function current(now)
  local v = load(KEYS[1])
  if not v or purged(v, now) then
    return nil, false
  end
  return v, settle(v, now)
end

-- Compares two MACs in time that tells nothing about where they differ:
-- it compares their SHA-1 digests instead, so an early exit can only reveal
-- a prefix of a digest nobody can steer (the double-hash comparison). A
-- byte-by-byte loop in Lua took about a quarter of a check script's time.
local function same(a, b)
  if not a or not b then
    return false
  end
  return redis.sha1hex(a) == redis.sha1hex(b)
end

-- One check attempt spent (Verification::check and ::press).
local function spend_attempt(v)
  local left = math.max(num(v.checks_remaining) - 1, 0)
  v.checks_remaining = tostring(left)
  if left == 0 then
    v.status = 'max_attempts_reached'
  end
end

-- What stays in Redis: the code's MAC and the bookkeeping of key names.
local INTERNAL = { code_key = true, code_mac = true, unconfirmed_key = true,
  unconfirmed_mac = true, pending_key = true, watch = true, retention = true,
  check_budget = true, unacked = true, indexed = true, history_key = true }

-- The verification as the reply carries it: one JSON text, an array of its
-- fields (names and values alternating), then an array of its attempts (each
-- a JSON text, as stored). One bulk string parses far faster in verifyd
-- than a nested reply of forty; it is also the shape idempotent replays
-- keep (record.rs). An unacknowledged approval shows pending.
local function reply(v, attempts_key)
  local flat = {}
  for field, value in pairs(v) do
    if value and not INTERNAL[field] then
      if field == 'status' and v.unacked then
        value = 'pending'
      end
      flat[#flat + 1] = field
      flat[#flat + 1] = value
    end
  end
  local attempts = redis.call('LRANGE', attempts_key, 0, -1)
  -- cjson writes an empty table as an object.
  local listed = #attempts > 0 and cjson.encode(attempts) or '[]'
  return '[' .. cjson.encode(flat) .. ',' .. listed .. ']'
end

-- Policy::resend_wait: the cooldown doubles with each resend, at most
-- MAX_RESEND_DOUBLINGS (3) times.
local function resend_wait(cooldown, sends_made)
  local doublings = math.min(math.max(sends_made - 1, 0), 3)
  return cooldown * 2 ^ doublings
end

-- When a pending verification's next fallback step falls due (Fallback's
-- `next_at`), or nil while none is to run.
local function step_at(v)
  if v.status == 'pending' and v.fallback_at then
    return num(v.fallback_at)
  end
  return nil
end

-- The deadline index (deadlines.rs): one sorted set per hash tag, in the
-- verification's slot, holding "id tenant" scored by its expires_at while
-- it may still expire (pending, or an approval awaiting its replicas), or
-- by its next fallback step's time when that comes first.
-- `indexed` marks a verification in it, so that one written before the
-- index existed joins it at its next change, and others cost no write.
-- An expired verification's entry stays until a replica has announced
-- the expiry; any other end removes it. The set lives as long as its
-- latest verification, and up to a day more.
local function index_deadline(key, v, before, now)
  local deadlines = string.match(key, '^[^{]*{%x+}') .. ':deadlines'
  local member = v.id .. ' ' .. v.tenant
  if v.status == 'pending' or v.unacked then
    if v.expires_at == before.expires_at and v.fallback_at == before.fallback_at and v.indexed then
      return
    end
    local due = num(v.expires_at)
    local step = step_at(v)
    if step and step < due then
      due = step
    end
    -- '~' at +inf is never due: it keeps the set from emptying, since the
    -- scripts declare it (Invocation::declare) and a declared key missing
    -- mid-migration would hold them back (TRYAGAIN) until it ends.
    redis.call('ZADD', deadlines, string.format('%d', due), member, '+inf', '~')
    v.indexed = '1'
    -- PEXPIRE costs a script more than the rest of this (measured), so
    -- the set's life is renewed about once a day, not with every entry.
    local ttl = math.max(num(v.expires_at) + num(v.retention) - now, 1000)
    if redis.call('PTTL', deadlines) < ttl then
      redis.call('PEXPIRE', deadlines, ttl + 86400000)
    end
  elseif v.status ~= 'expired' and (before.status == 'pending' or before.unacked) then
    redis.call('ZREM', deadlines, member)
  end
end

-- Writes `v` back when `changed`. Whatever leaves the verification finished
-- also drops its code hash (it can never approve again) and frees its
-- pending slot, as the memory store's `update` does; an unacknowledged
-- approval keeps both, for the same code to ask again and for a new start
-- to supersede it. Watchers on any
-- replica hear of the change in the same atomic step, except of an
-- unacknowledged approval, which they hear of from acknowledge.lua.
local function save(key, attempts_key, v, now, changed)
  if v.status ~= 'pending' and not v.unacked then
    if v.code_mac or v.unconfirmed_mac then
      v.code_key = false
      v.code_mac = false
      v.unconfirmed_key = false
      v.unconfirmed_mac = false
      changed = true
    end
    if v.pending_key and redis.call('GET', v.pending_key) == v.id then
      redis.call('DEL', v.pending_key)
    end
  end
  if not changed then
    return
  end
  -- Unknown (never loaded, or saved since): write every field and delete
  -- every field marked false.
  local known = loaded[key]
  local before = known or {}
  index_deadline(key, v, before, now)
  local set, gone = {}, {}
  for field, value in pairs(v) do
    if not value then
      if before[field] or not known then
        gone[#gone + 1] = field
      end
    elseif value ~= before[field] then
      set[#set + 1] = field
      set[#set + 1] = value
    end
  end
  if #set > 0 then
    redis.call('HSET', key, unpack(set))
  end
  if #gone > 0 then
    redis.call('HDEL', key, unpack(gone))
  end
  -- The keys live until the verification's retention ends. Their TTLs
  -- are set again only when that moment moves (a new verification counts)
  -- or the script began a key (`began_attempts`): otherwise they stand.
  if began_attempts or v.expires_at ~= before.expires_at or v.retention ~= before.retention then
    local ttl = math.max(num(v.expires_at) + num(v.retention) - now, 1000)
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', attempts_key, ttl)
    if v.status == 'pending' and v.pending_key then
      redis.call('PEXPIRE', v.pending_key, ttl)
    end
    -- The destination's history (create.lua) lists this one as long as
    -- it is kept.
    if v.history_key and redis.call('PTTL', v.history_key) < ttl then
      redis.call('PEXPIRE', v.history_key, ttl)
    end
  end
  if not v.unacked then
    redis.call('PUBLISH', v.watch, v.status)
  end
  -- What was loaded no longer says what the hash holds.
  loaded[key] = nil
end
