-- ARGV: ttl ms, status, queue position, n, then n events as (id, name, data). Appends the
-- events not yet in the stream (a retried call adds nothing twice), notes the status and the
-- time (``beat``: the generating instance is alive), and
-- answers what the generating instance must know: {stop asked (0/1), followers elsewhere}.
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[4])
local last = 0
local newest = redis.call('XREVRANGE', events_key, '+', '-', 'COUNT', 1)
if #newest > 0 then
  last = tonumber(string.match(newest[1][1], '%-(%d+)$'))
end
for i = 0, n - 1 do
  local id = tonumber(ARGV[5 + 3 * i])
  if id > last then
    redis.call('XADD', events_key, '0-' .. id, 'e', ARGV[6 + 3 * i], 'd', ARGV[7 + 3 * i])
  end
end
redis.call('HSET', meta_key, 'status', ARGV[2], 'position', ARGV[3], 'beat', now)
redis.call('ZREMRANGEBYSCORE', followers_key, '-inf', now)
local followers = redis.call('ZCARD', followers_key)
local stop = redis.call('HGET', meta_key, 'stop')
expire_all(ttl)
return {stop and 1 or 0, followers}
