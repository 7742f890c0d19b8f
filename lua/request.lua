-- Evaluates a batch of requests, in order, each one all-or-nothing: the same steps as
-- evaluate_hits() and settle() in ratelimitd/algorithms/request.py (which state the rules),
-- applied to one request after another so that each request sees what the ones before it
-- committed. The algorithm files are loaded before this one and fill the `algorithms` table.
--
-- KEYS: the counter key of every hit of every request, in order (a key may repeat).
-- ARGV[1]: the current time in microseconds for tests, or "" (lua/clock.lua sets `now`).
-- ARGV[2]: the batch as space-separated tokens (one argument is far cheaper to send than
--          thousands): the number of requests, then per request its number of hits followed
--          by 7 tokens per hit: algorithm, requests_per_unit, window (its length us, or a
--          calendar window's boundaries: lua/window.lua), burst, overdraft (the most debt;
--          0: none), cost, role (0: plain, 1: shadow, 2: quota; a quota hit rejects the
--          request only if no quota hit of it is admitted).
-- ARGV[3]: "dry" for a dry run (explain's peek): every answer is the same, but nothing is
--          written, so the stored counters and their TTLs stay untouched. Absent otherwise.
-- Returns 3 integers per hit: admitted (1/0), remaining, reset us.

local FIELDS = 7
local spec = {}
for token in string.gmatch(ARGV[2], '%S+') do spec[#spec + 1] = token end
local committed, committed_ttl, dirty = {}, {}, {}

-- A key's state as committed so far by this batch, else as stored (false: no state).
local function state_of(key)
  local state = committed[key]
  if state == nil then
    state = redis.call('GET', key)
    committed[key] = state
  end
  return state
end

-- algorithm, cost, requests_per_unit, unit us, burst, overdraft, role of the hit whose
-- tokens start at base
local function hit_args(base)
  return algorithms[spec[base]], tonumber(spec[base + 5]), tonumber(spec[base + 1]),
    read_unit(spec[base + 2]), tonumber(spec[base + 3]), tonumber(spec[base + 4]),
    spec[base + 6]
end

local out = {}
local arg, first_key = 2, 1
for _ = 1, tonumber(spec[1]) do
  local n = tonumber(spec[arg])
  arg = arg + 1
  local staged, staged_ttl, tentative = {}, {}, {}
  local rejected, quota_over, quota_passed = false, false, false
  for i = 0, n - 1 do
    local key = KEYS[first_key + i]
    local algorithm, cost, rate, unit, burst, overdraft, role = hit_args(arg + i * FIELDS)
    local state = staged[key]
    if state == nil then state = state_of(key) end
    local admitted, new_state, remaining, reset, ttl =
      algorithm(state, now, cost, rate, unit, burst, overdraft)
    tentative[i] = {admitted, remaining, reset, overdraft > 0}
    if new_state then -- admitted, or an overdraft charge
      staged[key] = new_state
      staged_ttl[key] = ttl
    end
    if role == '2' then
      if admitted then quota_passed = true else quota_over = true end
    elseif role == '0' and not admitted then
      rejected = true
    end
  end
  if quota_over and not quota_passed then rejected = true end
  for i = 0, n - 1 do
    local key = KEYS[first_key + i]
    -- A rejected request keeps only the charges of limits with overdraft.
    if staged[key] and (not rejected or tentative[i][4]) then
      committed[key] = staged[key]
      committed_ttl[key] = staged_ttl[key]
      dirty[key] = true
    end
  end
  for i = 0, n - 1 do
    local r = tentative[i]
    out[#out + 1] = r[1] and 1 or 0
    if rejected and not r[4] then
      -- Nothing is consumed: report the untouched counter, keeping each hit's own verdict.
      local algorithm, _, rate, unit, burst, overdraft = hit_args(arg + i * FIELDS)
      local _, _, remaining, reset =
        algorithm(state_of(KEYS[first_key + i]), now, 0, rate, unit, burst, overdraft)
      out[#out + 1] = remaining
      out[#out + 1] = r[1] and reset or r[3]
    else
      out[#out + 1] = r[2]
      out[#out + 1] = r[3]
    end
  end
  arg = arg + n * FIELDS
  first_key = first_key + n
end

if ARGV[3] ~= 'dry' then
  for key in pairs(dirty) do
    redis.call('SET', key, committed[key], 'PX', math.max(1, math.ceil(committed_ttl[key] / 1000)))
  end
end
return out
