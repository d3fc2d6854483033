-- One instance's look at its waiters. ARGV: channel, capacity, lease_ms, heartbeat_ms, then
-- (ticket, ready) pairs. Refreshes each waiter's heartbeat, marks it ready, grants what it can.
-- Returns {ms until the next lease or heartbeat expiry (-1: none), then one position per
-- ticket: 1-based while waiting, 0 granted, -1 gone (expired)}.
local capacity, lease_ms, heartbeat_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local changed = purge()
local tickets = {}
for i = 5, #ARGV, 2 do
  local ticket = ARGV[i]
  local number = redis.call('ZSCORE', queue_key, ticket)
  if number then
    redis.call('ZADD', heartbeats_key, now + heartbeat_ms, ticket)
    if ARGV[i + 1] == '1' then
      redis.call('ZADD', ready_key, number, ticket)
    end
    if grantable(ticket, capacity) then
      grant(ticket, lease_ms)
      changed = true
    end
  end
  tickets[#tickets + 1] = ticket
end

local next_expiry = -1
for _, key in ipairs({holders_key, heartbeats_key}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  if first and (next_expiry < 0 or tonumber(first) - now < next_expiry) then
    next_expiry = math.max(0, tonumber(first) - now)
  end
end

local result = {next_expiry}
for _, ticket in ipairs(tickets) do
  local rank = redis.call('ZRANK', queue_key, ticket)
  if rank then
    result[#result + 1] = rank + 1
  elseif redis.call('ZSCORE', holders_key, ticket) then
    result[#result + 1] = 0
  else
    result[#result + 1] = -1
  end
end
if changed then
  wake_waiters()
end
return result
