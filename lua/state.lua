-- A counter's state as stored: its numbers, separated by single spaces, each written with
-- %.17g, which reads back as the same double. Every algorithm file reads and writes its
-- states with these two.
local STATE_FORMATS = {'%.17g', '%.17g %.17g', '%.17g %.17g %.17g'}

-- The state holding the given numbers (one to three).
local function encode_state(...)
  return string.format(STATE_FORMATS[select('#', ...)], ...)
end

-- The numbers of a stored state, in order (one to three; nil after the last).
local function decode_state(state)
  local a, b, c = string.match(state, '^(%S+) ?(%S*) ?(%S*)$')
  return tonumber(a), tonumber(b), tonumber(c)
end
