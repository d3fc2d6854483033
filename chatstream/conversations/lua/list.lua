-- KEYS: the owner's index, its summaries. ARGV: the cursor's score ('+inf' for the first
-- page) and id ('' for the first page), limit. Returns {more (0/1), id, summary, id, ...},
-- most recently updated first; ties in time are ordered by id, so a cursor is exact.
local index, summaries = KEYS[1], KEYS[2]
local score, after, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ties = 0
if after ~= '' then
  ties = redis.call('ZCOUNT', index, score, score)
end
local found = redis.call('ZREVRANGEBYSCORE', index, score, '-inf', 'WITHSCORES', 'LIMIT', 0, limit + ties + 1)
local page = {0}
local taken = 0
for i = 1, #found, 2 do
  local id, at = found[i], found[i + 1]
  if after == '' or tonumber(at) < tonumber(score) or id < after then
    if taken == limit then
      page[1] = 1
      break
    end
    local summary = redis.call('HGET', summaries, id)
    if summary then
      page[#page + 1] = id
      page[#page + 1] = summary
      taken = taken + 1
    end
  end
end
return page
