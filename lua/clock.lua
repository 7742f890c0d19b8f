-- The current time in microseconds, shared by both drivers: Redis TIME, the one clock every
-- replica agrees on, unless ARGV[1] gives a time (tests only, to compare with the memory store).
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
