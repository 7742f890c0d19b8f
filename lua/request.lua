-- Evaluates a batch of requests, in order, each one all-or-nothing: the same steps as
-- evaluate_hits() and settle() in ratelimitd/algorithms/request.py (which state the rules),
-- applied to one request after another so that each request sees what the ones before it
-- committed. The algorithm files are loaded before this one and fill the `algorithms` table.
--
-- KEYS: the counter key of every hit of every request, in order (a key may repeat).
-- ARGV[1]: the current time in microseconds for tests, or "" (lua/clock.lua sets `now`).
-- ARGV[2]: the batch's request shapes, separated by ';': a shape is the hits of a request,
--          7 space-separated tokens per hit: algorithm, requests_per_unit, window (its length
--          us, or a calendar window's boundaries: lua/window.lua), burst, overdraft (the most
--          debt; 0: none), cost, role (0: plain, 1: shadow, 2: quota; a quota hit rejects the
--          request only if no quota hit of it is admitted). A batch's requests mostly share
--          a few shapes, each parsed once here.
-- ARGV[3]: per request, in order, the number of its shape (from 1), space-separated.
-- ARGV[4]: "dry" for a dry run (explain's peek): every answer is the same, but nothing is
--          written, so the stored counters and their TTLs stay untouched. Absent otherwise.
-- Returns 3 integers per hit: admitted (1/0), remaining, reset us.

local FIELDS = 7
local shapes = {}
for text in string.gmatch(ARGV[2], '[^;]+') do
  local tokens = {}
  for token in string.gmatch(text, '%S+') do tokens[#tokens + 1] = token end
  local hits = {}
  for base = 1, #tokens, FIELDS do
    hits[#hits + 1] = {
      algorithm = algorithms[tokens[base]], rate = tonumber(tokens[base + 1]),
      unit = read_unit(tokens[base + 2]), burst = tonumber(tokens[base + 3]),
      overdraft = tonumber(tokens[base + 4]), cost = tonumber(tokens[base + 5]),
      role = tokens[base + 6],
    }
  end
  shapes[#shapes + 1] = hits
end

local committed, committed_ttl, dirty = {}, {}, {}

-- A key's state as committed so far by this batch, else as stored (false: no state).
local function state_of(key)
  local state = committed[key]
  if state == nil then
    state = load_state(redis.call('GET', key))
    committed[key] = state
  end
  return state
end

-- One request's hits as evaluated, by hit number; reused from request to request.
local admitted_at, state_at, remaining_at, reset_at, ttl_at = {}, {}, {}, {}, {}

-- The hit number of the last of a request's hits on `key` that staged a state, up to `last`
-- (nil: none did).
local function staged_on(key, first_key, last)
  for j = last, 1, -1 do
    if state_at[j] and KEYS[first_key + j - 1] == key then return j end
  end
  return nil
end

local out, count = {}, 0
local first_key = 1
for index in string.gmatch(ARGV[3], '%S+') do
  local hits = shapes[tonumber(index)]
  local n = #hits
  local rejected, quota_over, quota_passed = false, false, false
  for i = 1, n do
    local hit = hits[i]
    local key = KEYS[first_key + i - 1]
    local staged = staged_on(key, first_key, i - 1)
    local state
    if staged then state = state_at[staged] else state = state_of(key) end
    local admitted, new_state, remaining, reset, ttl = hit.algorithm(
      state, now, hit.cost, hit.rate, hit.unit, hit.burst, hit.overdraft)
    admitted_at[i], state_at[i], remaining_at[i], reset_at[i], ttl_at[i] =
      admitted, new_state, remaining, reset, ttl
    if hit.role == '2' then
      if admitted then quota_passed = true else quota_over = true end
    elseif hit.role == '0' and not admitted then
      rejected = true
    end
  end
  if quota_over and not quota_passed then rejected = true end
  for i = 1, n do
    -- A rejected request keeps only the charges of limits with overdraft.
    if not rejected or hits[i].overdraft > 0 then
      local key = KEYS[first_key + i - 1]
      local staged = staged_on(key, first_key, n)
      if staged then
        committed[key] = state_at[staged]
        committed_ttl[key] = ttl_at[staged]
        dirty[key] = true
      end
    end
  end
  for i = 1, n do
    local hit = hits[i]
    out[count + 1] = admitted_at[i] and 1 or 0
    if rejected and hit.overdraft == 0 then
      -- Nothing is consumed: report the untouched counter, keeping each hit's own verdict.
      local _, _, remaining, reset = hit.algorithm(state_of(KEYS[first_key + i - 1]), now, 0,
        hit.rate, hit.unit, hit.burst, hit.overdraft)
      out[count + 2] = remaining
      out[count + 3] = admitted_at[i] and reset or reset_at[i]
    else
      out[count + 2] = remaining_at[i]
      out[count + 3] = reset_at[i]
    end
    count = count + 3
  end
  first_key = first_key + n
end

if ARGV[4] ~= 'dry' then
  for key in pairs(dirty) do
    redis.call('SET', key, store_state(committed[key]), 'PX',
      math.max(1, math.ceil(committed_ttl[key] / 1000)))
  end
end
return out
