-- Prepended to every conversation script. Times are milliseconds of Redis TIME, so instances
-- never compare their own clocks. ``expire(key, ttl)`` keeps an anonymous owner's keys alive
-- (ttl > 0) or makes a signed-in user's lasting (ttl = 0).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function expire(key, ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end
