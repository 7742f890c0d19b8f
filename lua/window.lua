-- A hit's window, for lua/fixed_window.lua: the same as ratelimitd/algorithms/windows.py.
-- `unit` is what the driver read from the window token (see read_unit): a length in us, for
-- windows aligned to the epoch, or a calendar window's four boundaries b1 < b2 < b3 < b4,
-- the starts of consecutive windows the replica computed around its own clock.

-- The window token: a number, or four comma-separated boundaries.
local function read_unit(token)
  local length = tonumber(token)
  if length then return length end
  local bounds = {}
  for bound in string.gmatch(token, '[^,]+') do bounds[#bounds + 1] = tonumber(bound) end
  return bounds
end

-- Start and end (us) of the window holding `now`. For a calendar window, the one of the
-- three given that holds Redis' own time, so the period is decided by the clock every replica
-- shares; beyond them (a replica's clock a whole window off), the nearest.
local function window_of(now, unit)
  if type(unit) == 'number' then
    local start = now - (now % unit)
    return start, start + unit
  end
  if now >= unit[3] then return unit[3], unit[4] end
  if now >= unit[2] then return unit[2], unit[3] end
  return unit[1], unit[2]
end
