-- KEYS: the conversation's record. ARGV: version, start, n (new messages), count, bytes, title
-- ('' keeps it), ttl ms, the n messages (JSON), then the ids of the dropped messages (their
-- feedback goes). Replaces the messages from ``start`` on, if the record is still at
-- ``version``; returns the new meta (JSON), or false.
local record = KEYS[1]
local meta_json = redis.call('HGET', record, 'meta')
if not meta_json then
  return false
end
local meta = cjson.decode(meta_json)
if meta.version ~= tonumber(ARGV[1]) then
  return false
end
local start, n = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  redis.call('HSET', record, 'm:' .. (start + i - 1), ARGV[7 + i])
end
for position = start + n, meta.count - 1 do
  redis.call('HDEL', record, 'm:' .. position)
end
for i = 8 + n, #ARGV do
  redis.call('HDEL', record, 'f:' .. ARGV[i])
end
meta.count, meta.bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
meta.updated_at, meta.version = now, meta.version + 1
if not meta.renamed and ARGV[6] ~= '' then
  meta.title = ARGV[6]
end
meta_json = cjson.encode(meta)
redis.call('HSET', record, 'meta', meta_json)
expire(record, tonumber(ARGV[7]))
return meta_json
