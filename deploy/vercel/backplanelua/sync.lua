-- sync: refresh this instance's keys in one rendezvous and return the live
-- entries of the other instances, deleting expired ones. A key another live
-- instance holds is left to it (that is the newer route); a key that was
-- missing or expired is taken and announced. KEYS[1] hash; ARGV: instance,
-- ttl ms, channel, join message prefix (the key is appended), then the
-- local keys. Returns field, instance, field, instance...
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
for i = 5, #ARGV do
  local f = ARGV[i]
  local v = redis.call('HGET', KEYS[1], f)
  local mine = v and string.sub(v, 1, 16) == me
  local exp = v and tonumber(string.sub(v, 17))
  if (not v) or mine or (not exp) or exp <= now then
    redis.call('HSET', KEYS[1], f, me .. (now + ttl))
    if not mine then redis.call('PUBLISH', ARGV[3], ARGV[4] .. f) end
  end
end
if #ARGV >= 5 then redis.call('PEXPIRE', KEYS[1], 2 * ttl) end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local exp = tonumber(string.sub(v, 17))
  if (not exp) or exp <= now then
    redis.call('HDEL', KEYS[1], f)
  elseif string.sub(v, 1, 16) ~= me then
    out[#out + 1] = f
    out[#out + 1] = string.sub(v, 1, 16)
  end
end
return out
