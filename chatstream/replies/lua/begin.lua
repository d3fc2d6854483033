-- ARGV: ttl ms, then the meta's field/value pairs. A new reply, queued.
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', meta_key, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', meta_key, 'beat', now)
expire_all(ttl)
return 1
