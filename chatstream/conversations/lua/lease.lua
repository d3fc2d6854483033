-- KEYS: the conversation's lease. ARGV: token, what ('renew' or 'release'), ttl ms.
-- Returns 1 when ``token`` holds the lease (and renews or releases it), 0 otherwise.
local held = redis.call('GET', KEYS[1])
if not held or string.sub(held, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then
  return 0
end
if ARGV[2] == 'renew' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
else
  redis.call('DEL', KEYS[1])
end
return 1
