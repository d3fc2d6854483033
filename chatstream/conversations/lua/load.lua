-- KEYS: the conversation's record. ARGV: ttl ms. Every field, the TTL refreshed; {} if none.
local record = KEYS[1]
if redis.call('EXISTS', record) == 0 then
  return {}
end
expire(record, tonumber(ARGV[1]))
return redis.call('HGETALL', record)
