-- KEYS: the conversation's record. ARGV: owner, what ('title' or 'feedback'), then a title, or
-- a message id and its feedback (JSON). Renames the conversation (its messages and version
-- unchanged, so a reply being stored is not disturbed) or keeps feedback on a message; returns
-- the meta (JSON), or false when the record is not the owner's.
local record, owner, what = KEYS[1], ARGV[1], ARGV[2]
local meta_json = redis.call('HGET', record, 'meta')
if not meta_json then
  return false
end
local meta = cjson.decode(meta_json)
if meta.owner ~= owner then
  return false
end
if what == 'title' then
  meta.title, meta.renamed = ARGV[3], true
  meta_json = cjson.encode(meta)
  redis.call('HSET', record, 'meta', meta_json)
else
  redis.call('HSET', record, 'f:' .. ARGV[3], ARGV[4])
end
return meta_json
