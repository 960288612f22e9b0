-- Store::end_fallback (Verification::end_fallback): no fallback step runs
-- any more, when the workflow still stands, due, at the step a replica
-- found due and could not send (a gate refused it). ARGV: now, that step.
-- Replies 1 when it ended the workflow, else 0.
local now = num(ARGV[1])
local v, changed = current(now)
if not v then
  return 0
end
local due = step_at(v)
local ends = due ~= nil and due <= now and v.fallback_step == ARGV[2]
if ends then
  v.fallback_at = false
end
save(KEYS[1], KEYS[2], v, now, changed or ends)
if ends then
  return 1
end
return 0
