-- A counter's state: its numbers (one to three). While a script runs, states stay numbers in
-- a table, so a key hit many times in one batch is formatted and parsed only once; stored,
-- they are separated by single spaces, each written with %.17g, which reads back as the same
-- double. Every algorithm file builds and reads states with encode_state and decode_state;
-- the drivers load and store them.
local STATE_FORMATS = {'%.17g', '%.17g %.17g', '%.17g %.17g %.17g'}

-- The state holding the given numbers (one to three).
local function encode_state(...)
  return {...}
end

-- The numbers of a state, in order (one to three; nil after the last).
local function decode_state(state)
  return state[1], state[2], state[3]
end

-- A state as read from Redis (false: no state).
local function load_state(stored)
  if not stored then return false end
  local a, b, c = string.match(stored, '^(%S+) ?(%S*) ?(%S*)$')
  if c ~= '' then return {tonumber(a), tonumber(b), tonumber(c)} end
  if b ~= '' then return {tonumber(a), tonumber(b)} end
  return {tonumber(a)}
end

-- A state as written to Redis.
local function store_state(state)
  return string.format(STATE_FORMATS[#state], state[1], state[2], state[3])
end
