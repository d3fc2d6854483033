-- KEYS: the conversation's record. ARGV: owner, title, created_at ms, ttl ms, named ('1': the
-- title was given, and sticks as a rename does; '0': the first message will name it), system
-- prompt (absent when none). Creates the record; returns its meta (JSON).
local record = KEYS[1]
local ttl = tonumber(ARGV[4])
local created = tonumber(ARGV[3])
local meta = cjson.encode({
  owner = ARGV[1], title = ARGV[2], renamed = ARGV[5] == '1',
  created_at = created, updated_at = created, count = 0, bytes = 0, version = 0,
})
redis.call('HSET', record, 'meta', meta)
if ARGV[6] then
  redis.call('HSET', record, 'system', ARGV[6])
end
expire(record, ttl)
return meta
