-- Prepended to every admission script. KEYS are SemaphoreKeys.script_keys, ARGV[1] is the wake
-- channel. Times are milliseconds of Redis TIME: instances never compare their own clocks.
local tickets_key, queue_key, ready_key, heartbeats_key, holders_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ticket_clients_key, client_tickets_key = KEYS[6], KEYS[7]
local wake_channel = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- A ticket left the queue and the holders: its client has one ticket fewer. Forgetting a
-- ticket twice, or one without a client, changes nothing.
local function forget(ticket)
  local client = redis.call('HGET', ticket_clients_key, ticket)
  if client then
    redis.call('HDEL', ticket_clients_key, ticket)
    if redis.call('HINCRBY', client_tickets_key, client, -1) <= 0 then
      redis.call('HDEL', client_tickets_key, client)
    end
  end
end

-- Drops waiters that stopped heartbeating and holders whose lease ran out; true when any went.
local function purge()
  local dead = redis.call('ZRANGEBYSCORE', heartbeats_key, '-inf', now)
  local expired = redis.call('ZRANGEBYSCORE', holders_key, '-inf', now)
  for _, ticket in ipairs(dead) do
    redis.call('ZREM', queue_key, ticket)
    redis.call('ZREM', ready_key, ticket)
    forget(ticket)
  end
  for _, ticket in ipairs(expired) do
    forget(ticket)
  end
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', heartbeats_key, '-inf', now)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', holders_key, '-inf', now)
  end
  return #dead > 0 or #expired > 0
end

local function free_permits(capacity)
  return capacity - redis.call('ZCARD', holders_key)
end

-- Grants go to the oldest waiters whose instance has a free slot, as many as permits are free.
local function grantable(ticket, capacity)
  local rank = redis.call('ZRANK', ready_key, ticket)
  return rank and rank < free_permits(capacity)
end

-- A granted ticket still counts for its client: queued and running are both its requests.
local function grant(ticket, lease_ms)
  redis.call('ZREM', queue_key, ticket)
  redis.call('ZREM', ready_key, ticket)
  redis.call('ZREM', heartbeats_key, ticket)
  redis.call('ZADD', holders_key, now + lease_ms, ticket)
end

-- Positions or free permits changed: every instance with waiters polls again.
local function wake_waiters()
  if redis.call('ZCARD', queue_key) > 0 then
    redis.call('PUBLISH', wake_channel, '')
  end
end
