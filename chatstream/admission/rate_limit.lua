-- One client's turns in a sliding window. KEYS[1]: the client's sorted set of turn starts (ms of
-- Redis TIME, scored and named by a random member). ARGV: member, limit, window_ms.
-- Starts the turn and returns 0, or returns the ms until the oldest turn leaves the window.
local key, member = KEYS[1], ARGV[1]
local limit, window_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
if redis.call('ZCARD', key) >= limit then
  local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
  return oldest + window_ms - now
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, window_ms)
return 0
