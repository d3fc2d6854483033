-- KEYS: the owner's index, its summaries. ARGV: conversation id. Returns 1 if it was listed.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
