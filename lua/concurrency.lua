-- Concurrency slots (twin of ratelimitd/algorithms/concurrency.py). KEYS: one sorted set per
-- concurrency limit, members the holders (one id per request), scores their lease expiry in
-- microseconds (written with %.0f: Lua's own number format keeps 14 digits).
-- ARGV[1]: now (tests only, else Redis TIME, see clock.lua); ARGV[2]: the operation, take |
-- renew | release; ARGV[3]: the holder; ARGV[4]: the lease in microseconds; ARGV[5..]: per
-- key, its capacity (take only).
-- take: every slot or none; answers {1 if taken else 0, in flight per key}.
-- renew: extends the holder's live leases; answers how many were live.
-- release: removes the holder; answers 0.
local op, holder, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl_ms = math.ceil(lease / 1000)

if op == 'release' then
  for _, key in ipairs(KEYS) do
    redis.call('ZREM', key, holder)
  end
  return 0
end

-- The set lives while any lease in it may: one lease past its last take or renewal.
local function keep(key)
  if redis.call('PTTL', key) < ttl_ms then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end

if op == 'renew' then
  local renewed = 0
  for _, key in ipairs(KEYS) do
    local expiry = redis.call('ZSCORE', key, holder)
    if expiry and tonumber(expiry) > now then
      redis.call('ZADD', key, string.format('%.0f', now + lease), holder)
      keep(key)
      renewed = renewed + 1
    end
  end
  return renewed
end

local answer, full = {1}, false
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
  local n = redis.call('ZCARD', key)
  if redis.call('ZSCORE', key, holder) then
    n = n - 1
  end
  answer[i + 1] = n
  if n >= tonumber(ARGV[4 + i]) then
    full = true
  end
end
if full then
  answer[1] = 0
  return answer
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, string.format('%.0f', now + lease), holder)
  keep(key)
  answer[i + 1] = answer[i + 1] + 1
end
return answer
