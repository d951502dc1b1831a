-- join: this instance now routes a key (its newest connection is here),
-- whoever held it before. KEYS[1] hash; ARGV: field, instance, ttl ms,
-- channel, join message.
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. (now + ttl))
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
