-- KEYS: the owner's index, its summaries. ARGV: conversation id, summary (JSON), updated ms,
-- ttl ms, add (1: list it if it is not; 0: only update a listed one, not one removed meanwhile).
local index, summaries, id = KEYS[1], KEYS[2], ARGV[1]
if ARGV[5] ~= '1' and not redis.call('ZSCORE', index, id) then
  return 0
end
redis.call('ZADD', index, tonumber(ARGV[3]), id)
redis.call('HSET', summaries, id, ARGV[2])
expire(index, tonumber(ARGV[4]))
expire(summaries, tonumber(ARGV[4]))
return 1
