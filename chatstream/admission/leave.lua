-- ARGV: channel, ticket. Removes the ticket whatever it is (waiter or holder); returns 1 if it was.
-- Its client forgets it even when it was no longer found (its holders' key deleted by hand).
local ticket = ARGV[2]
local changed = purge()
local removed = redis.call('ZREM', holders_key, ticket) + redis.call('ZREM', queue_key, ticket)
redis.call('ZREM', ready_key, ticket)
redis.call('ZREM', heartbeats_key, ticket)
forget(ticket)
if changed or removed > 0 then
  wake_waiters()
end
return removed
