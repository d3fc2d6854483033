-- Prepended to every reply script. KEYS: the reply's meta, events, followers. Times are
-- milliseconds of Redis TIME, so instances never compare their own clocks.
local meta_key, events_key, followers_key = KEYS[1], KEYS[2], KEYS[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function expire_all(ttl)
  redis.call('PEXPIRE', meta_key, ttl)
  redis.call('PEXPIRE', events_key, ttl)
  redis.call('PEXPIRE', followers_key, ttl)
end
