-- KEYS: the conversation's record. ARGV: the owner it has, the one it gets, ttl ms. Returns the
-- meta (JSON) with the new owner, or false when it is not the first owner's.
local record = KEYS[1]
local meta_json = redis.call('HGET', record, 'meta')
if not meta_json then
  return false
end
local meta = cjson.decode(meta_json)
if meta.owner ~= ARGV[1] then
  return false
end
meta.owner = ARGV[2]
meta_json = cjson.encode(meta)
redis.call('HSET', record, 'meta', meta_json)
expire(record, tonumber(ARGV[3]))
return meta_json
