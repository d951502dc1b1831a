-- join: this instance now routes a key (its newest connection is here),
-- whoever held it before, unless the key is new to the rendezvous and the
-- rendezvous already holds the member cap: Redis is where the cap holds
-- across instances, each of which admitted the key on its own view. Entries
-- of dead instances are swept before a refusal, so they never hold places.
-- KEYS[1] hash; ARGV: field, instance, ttl ms, channel, join message, member
-- cap. Returns 1, or 0 when refused (nothing written, nothing published).
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[6])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= cap then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local exp = tonumber(string.sub(all[i + 1], 17))
    if (not exp) or exp <= now then redis.call('HDEL', KEYS[1], all[i]) end
  end
  if redis.call('HLEN', KEYS[1]) >= cap then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. (now + ttl))
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
