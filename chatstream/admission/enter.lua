-- ARGV: channel, ticket, ready (1 when its instance has a free slot), capacity, max_queue,
-- lease_ms, heartbeat_ms, client digest ('' = none), max_per_client. Returns {position, ticket
-- number}: position 0 = granted, -1 = the queue is full, -2 = the client has max_per_client
-- tickets queued or granted. Entering twice with one ticket (a client retry) answers as the
-- first entry did.
local ticket, ready = ARGV[2], ARGV[3] == '1'
local capacity, max_queue = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease_ms, heartbeat_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local client, max_per_client = ARGV[8], tonumber(ARGV[9])
local changed = purge()

-- The ticket is the client's from now on, queued or granted, until it is forgotten.
local function count_for_client()
  if client ~= '' then
    redis.call('HSET', ticket_clients_key, ticket, client)
    redis.call('HINCRBY', client_tickets_key, client, 1)
  end
end

-- Whether the client has max_per_client live tickets. Before a refusal its count is checked
-- against the tickets themselves, so that tickets gone without being forgotten (a key deleted
-- by hand, purged by an instance of an older version) never lock the client out.
local function client_full()
  if client == '' then
    return false
  end
  if tonumber(redis.call('HGET', client_tickets_key, client) or '0') < max_per_client then
    return false
  end
  local live = 0
  local owners = redis.call('HGETALL', ticket_clients_key)
  for i = 1, #owners, 2 do
    if owners[i + 1] == client then
      local other = owners[i]
      if redis.call('ZSCORE', queue_key, other) or redis.call('ZSCORE', holders_key, other) then
        live = live + 1
      else
        forget(other)
      end
    end
  end
  return live >= max_per_client
end

local result
if redis.call('ZSCORE', holders_key, ticket) then
  result = {0, 0}
elseif redis.call('ZSCORE', queue_key, ticket) then
  result = {
    redis.call('ZRANK', queue_key, ticket) + 1,
    tonumber(redis.call('ZSCORE', queue_key, ticket)),
  }
elseif client_full() then
  result = {-2, 0}
elseif ready and redis.call('ZCARD', ready_key) < free_permits(capacity) then
  redis.call('ZADD', holders_key, now + lease_ms, ticket)
  count_for_client()
  result = {0, 0}
elseif redis.call('ZCARD', queue_key) >= max_queue then
  result = {-1, 0}
else
  local number = redis.call('INCR', tickets_key)
  redis.call('ZADD', queue_key, number, ticket)
  if ready then
    redis.call('ZADD', ready_key, number, ticket)
  end
  redis.call('ZADD', heartbeats_key, now + heartbeat_ms, ticket)
  count_for_client()
  result = {redis.call('ZCARD', queue_key), number}
end
if changed then
  wake_waiters()
end
return result
