-- Token bucket: the same function as ratelimitd/algorithms/token_bucket.py, operation for
-- operation, so Redis and the memory store give bit-identical answers.
--
-- state: false, or {tokens, last refill us} (lua/state.lua).
-- Returns: admitted, new state (nil: unchanged), remaining, reset us, ttl us.
local function refill_us(tokens, unit_us, rate)
  return math.ceil(tokens * unit_us / rate)
end

-- The bucket in `state` refilled up to `now`: its tokens and last refill time.
local function refilled(state, now, rate, unit_us, capacity)
  if not state then return capacity, now end
  local tokens, last = decode_state(state)
  if now > last then
    local elapsed = now - last
    if elapsed >= refill_us(capacity - tokens, unit_us, rate) then
      tokens = capacity
    else
      tokens = math.min(capacity, tokens + elapsed * rate / unit_us)
    end
    last = now
  end
  return tokens, last
end

algorithms.token_bucket = function(state, now, cost, rate, unit_us, capacity, overdraft)
  if rate == 0 then return false, nil, 0, unit_us, 0 end
  local tokens, last = refilled(state, now, rate, unit_us, capacity)
  if tokens >= math.max(cost, 1) then
    if cost == 0 then
      return true, nil, math.floor(tokens), refill_us(capacity - tokens, unit_us, rate), 0
    end
    local left = tokens - cost
    local until_full = refill_us(capacity - left, unit_us, rate)
    return true, encode_state(left, last), math.floor(left), until_full, until_full
  end
  if cost > 0 and overdraft > 0 then
    local left = math.max(tokens - cost, -overdraft)
    local until_full = refill_us(capacity - left, unit_us, rate)
    return false, encode_state(left, last), 0, refill_us(1 - left, unit_us, rate), until_full
  end
  local need = math.min(math.max(cost, 1), capacity)
  return false, nil, math.max(0, math.floor(tokens)), refill_us(need - tokens, unit_us, rate), 0
end

-- The inverse of an admitted hit, for lua/refund.lua: the tokens go back into the bucket
-- (never above its capacity). Returns the new state (nil: the bucket is full, as if it had
-- never been touched) and its ttl us.
refunds.token_bucket = function(state, now, cost, rate, unit_us, capacity)
  local tokens, last = refilled(state, now, rate, unit_us, capacity)
  tokens = math.min(capacity, tokens + cost)
  if tokens >= capacity then return nil, 0 end
  local until_full = refill_us(capacity - tokens, unit_us, rate)
  return encode_state(tokens, last), until_full
end
