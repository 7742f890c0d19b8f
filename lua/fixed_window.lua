-- Fixed window: the same function as ratelimitd/algorithms/fixed_window.py.
-- state: false, or {window start us, count}. Returns as token_bucket.lua does.
algorithms.fixed_window = function(state, now, cost, allowed, unit, _, overdraft)
  local start, finish = window_of(now, unit)
  local until_end = finish - now
  local count = 0
  if state then
    local window, stored = decode_state(state)
    if window == start then count = stored end
  end
  if count + math.max(cost, 1) > allowed then
    if cost > 0 and overdraft > 0 then
      count = math.min(count + cost, allowed + overdraft)
      return false, encode_state(start, count), 0, until_end, until_end
    end
    return false, nil, math.max(0, allowed - count), until_end, 0
  end
  if cost == 0 then
    return true, nil, allowed - count, until_end, 0
  end
  count = count + cost
  return true, encode_state(start, count), allowed - count, until_end, until_end
end

-- The inverse of an admitted hit, for lua/refund.lua: the count goes down if the hit's window
-- is still the current one. `reset_us` is what request.lua reported for the hit, the time to
-- the end of its window: if that is shorter than what is left of the current window, the
-- hit's window has ended since (a count in it no longer matters). Returns the new state (nil:
-- nothing counted, as if never touched; `state` itself: nothing to change) and its ttl us.
refunds.fixed_window = function(state, now, cost, _, unit, _, reset_us)
  local start, finish = window_of(now, unit)
  local until_end = finish - now
  local window, count = decode_state(state)
  if reset_us < until_end or window ~= start then return state, 0 end
  count = count - cost
  if count <= 0 then return nil, 0 end
  return encode_state(start, count), until_end
end
