-- Gives back what admitted hits consumed when their request was rejected elsewhere. In a
-- Redis Cluster each hash slot's part of a request is evaluated on its own, all-or-nothing
-- (lua/request.lua); when one part is rejected, the parts admitted in other slots are refunded
-- with this script, one call per slot. The algorithm files are loaded before this one and fill
-- the `refunds` table with each algorithm's inverse of an admitted hit.
--
-- KEYS: the counter key of every hit to refund (a key may repeat).
-- ARGV[1]: the current time in microseconds for tests, or "" (lua/clock.lua sets `now`).
-- ARGV[2]: space-separated tokens, 6 per hit: algorithm, requests_per_unit, window (as in
--          lua/request.lua), burst, cost, and the reset us that request.lua reported for it.
-- Returns nothing.

local FIELDS = 6
local spec = {}
for token in string.gmatch(ARGV[2], '%S+') do spec[#spec + 1] = token end

for i, key in ipairs(KEYS) do
  -- No state: the counter expired since, so there is nothing left to give back.
  local state = load_state(redis.call('GET', key))
  if state then
    local base = (i - 1) * FIELDS
    local refund = refunds[spec[base + 1]]
    local new_state, ttl = refund(state, now, tonumber(spec[base + 5]), tonumber(spec[base + 2]),
      read_unit(spec[base + 3]), tonumber(spec[base + 4]), tonumber(spec[base + 6]))
    if not new_state then
      redis.call('DEL', key)
    elseif new_state ~= state then
      redis.call('SET', key, store_state(new_state), 'PX', math.max(1, math.ceil(ttl / 1000)))
    end
  end
end
