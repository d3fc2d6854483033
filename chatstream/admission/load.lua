-- ARGV: channel. Returns {live holders, live waiters}.
if purge() then
  wake_waiters()
end
return {redis.call('ZCARD', holders_key), redis.call('ZCARD', queue_key)}
