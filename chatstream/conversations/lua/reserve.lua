-- KEYS: the owner's index, its summaries. ARGV: conversation id, title, limit, ttl ms.
-- Lists a new conversation for its owner; returns the summary (JSON), or false when the owner
-- already has ``limit``.
local index, summaries = KEYS[1], KEYS[2]
local id, title, limit, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('ZCARD', index) >= limit then
  return false
end
local summary = cjson.encode({title = title, created_at = now, updated_at = now, message_count = 0})
redis.call('ZADD', index, now, id)
redis.call('HSET', summaries, id, summary)
expire(index, ttl)
expire(summaries, ttl)
return summary
