-- ARGV: owner. Asks the generating instance to stop the reply; 1 if it is the owner's and
-- still generating, else 0.
local owner = redis.call('HGET', meta_key, 'owner')
local status = redis.call('HGET', meta_key, 'status')
if owner ~= ARGV[1] or (status ~= 'queued' and status ~= 'generating') then
  return 0
end
redis.call('HSET', meta_key, 'stop', '1')
return 1
