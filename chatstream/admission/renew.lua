-- ARGV: channel, ticket, lease_ms. Extends a live lease; returns 0 when it is already gone.
local ticket, lease_ms = ARGV[2], tonumber(ARGV[3])
local changed = purge()
local held = redis.call('ZSCORE', holders_key, ticket) ~= false
if held then
  redis.call('ZADD', holders_key, now + lease_ms, ticket)
end
if changed then
  wake_waiters()
end
return held and 1 or 0
