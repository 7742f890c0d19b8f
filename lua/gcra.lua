-- GCRA: the same function as ratelimitd/algorithms/gcra.py (whole microseconds throughout).
-- state: false, or {theoretical arrival time us}. Returns as token_bucket.lua does.
local function emission_interval(unit_us, rate)
  return math.max(1, math.floor(unit_us / rate))
end

algorithms.gcra = function(state, now, cost, rate, unit_us, burst, overdraft)
  if rate == 0 then return false, nil, 0, unit_us, 0 end
  local interval = emission_interval(unit_us, rate)
  local tolerance = burst * interval
  local tat = now
  if state then tat = math.max(decode_state(state), now) end
  if cost == 0 then
    if tat + interval - now <= tolerance then
      return true, nil, math.floor((tolerance - (tat - now)) / interval), tat - now, 0
    end
    return false, nil, 0, tat + interval - now - tolerance, 0
  end
  if cost <= burst then
    local new_tat = tat + cost * interval
    if new_tat - now <= tolerance then
      local remaining = math.floor((tolerance - (new_tat - now)) / interval)
      return true, encode_state(new_tat), remaining, new_tat - now, new_tat - now
    end
  end
  if overdraft > 0 then
    local new_tat = math.min(tat + cost * interval, now + tolerance + overdraft * interval)
    return false, encode_state(new_tat), 0, new_tat + interval - now - tolerance, new_tat - now
  end
  local need = math.min(cost, burst)
  local wait = math.max(0, tat + need * interval - now - tolerance)
  return false, nil, math.max(0, math.floor((tolerance - (tat - now)) / interval)), wait, 0
end

-- The inverse of an admitted hit, for lua/refund.lua: the TAT moves back by the cost's
-- intervals, but not before now. Returns the new state (nil: idle, as if never touched) and
-- its ttl us.
refunds.gcra = function(state, now, cost, rate, unit_us)
  local tat = decode_state(state) - cost * emission_interval(unit_us, rate)
  if tat <= now then return nil, 0 end
  return encode_state(tat), tat - now
end
