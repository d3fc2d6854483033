-- ARGV: follower id, heartbeat ms, owner. A follower on another instance says it is there;
-- returns the reply's meta (flat field/value list, with ``silent_ms``: how long ago the generating
-- instance last recorded), or {} when it is not the owner's.
local fields = redis.call('HGETALL', meta_key)
local owner
for i = 1, #fields, 2 do
  if fields[i] == 'owner' then owner = fields[i + 1] end
end
if owner ~= ARGV[3] then
  return {}
end
redis.call('ZADD', followers_key, now + tonumber(ARGV[2]), ARGV[1])
local beat = tonumber(redis.call('HGET', meta_key, 'beat') or now)
fields[#fields + 1] = 'silent_ms'
fields[#fields + 1] = tostring(math.max(0, now - beat))
return fields
