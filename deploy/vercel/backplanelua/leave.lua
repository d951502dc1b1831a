-- leave: this instance no longer routes a key. The entry is removed only if
-- it is still ours: after a move to another instance, the old instance's
-- leave must not erase the new route. KEYS[1] hash; ARGV: field, instance,
-- channel, leave message.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, 16) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
