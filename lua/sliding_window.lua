-- Sliding window (two-counter estimate): the same function as
-- ratelimitd/algorithms/sliding_window.py, operation for operation.
-- state: false, or {window start us, previous count, current count}.
-- Returns as token_bucket.lua does.
local function sliding_wait_us(previous, current, cost, allowed, until_end, unit_us)
  if cost > allowed then return until_end end
  if current + cost <= allowed then
    local decayed = unit_us * ((allowed - current - cost) / previous)
    return math.max(0, math.ceil(until_end - decayed))
  end
  local decayed = unit_us * ((allowed - cost) / current)
  return until_end + math.max(0, math.ceil(unit_us - decayed))
end

algorithms.sliding_window = function(state, now, cost, allowed, unit_us, _, overdraft)
  local start = now - (now % unit_us)
  local until_end = start + unit_us - now
  local previous, current = 0, 0
  if state then
    local window, stored_previous, stored_current = decode_state(state)
    if window == start then
      previous, current = stored_previous, stored_current
    elseif window == start - unit_us then
      previous = stored_current
    end
  end
  local weight = until_end / unit_us
  local estimate = previous * weight + current
  if estimate + math.max(cost, 1) > allowed then
    if cost > 0 and overdraft > 0 then
      current = math.min(current + cost, allowed + overdraft)
      return false, encode_state(start, previous, current), 0,
        sliding_wait_us(previous, current, 1, allowed, until_end, unit_us), until_end + unit_us
    end
    local remaining = math.max(0, math.floor(allowed - estimate))
    local wait = sliding_wait_us(previous, current, math.max(cost, 1), allowed, until_end, unit_us)
    return false, nil, remaining, wait, 0
  end
  if cost == 0 then
    return true, nil, math.floor(allowed - estimate), until_end, 0
  end
  current = current + cost
  local remaining = math.max(0, math.floor(allowed - (previous * weight + current)))
  return true, encode_state(start, previous, current), remaining, until_end, until_end + unit_us
end

-- The inverse of an admitted hit, for lua/refund.lua: the counter the hit went into goes
-- down, the current window's or, if the window rolled over since, the previous one's.
-- `reset_us` is what request.lua reported for the hit, the time to the end of its window
-- (see fixed_window.lua). Returns the new state (nil: nothing counted; `state` itself: nothing
-- to change) and its ttl us.
refunds.sliding_window = function(state, now, cost, _, unit_us, _, reset_us)
  local start = now - (now % unit_us)
  local until_end = start + unit_us - now
  local hit_window = start
  if reset_us < until_end then hit_window = start - unit_us end
  local w, p, c = decode_state(state)
  if w == hit_window then
    c = math.max(0, c - cost)
  elseif w == hit_window + unit_us then
    p = math.max(0, p - cost)
  else
    return state, 0
  end
  local new_state = encode_state(w, p, c)
  if w == start and c > 0 then return new_state, until_end + unit_us end
  -- Only one counter still weighs on the estimate, and only until this window ends.
  if (w == start and p > 0) or (w < start and c > 0) then return new_state, until_end end
  return nil, 0
end
