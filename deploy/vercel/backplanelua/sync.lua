-- sync: refresh this instance's keys in one rendezvous and return the live
-- entries of the other instances, deleting expired ones first. A key another
-- live instance holds is left to it (that is the newer route); a key that
-- was missing or expired is taken and announced, unless that would put the
-- rendezvous over the member cap: such keys are refused and returned, and
-- the instance evicts them. KEYS[1] hash; ARGV: instance, ttl ms, channel,
-- join message prefix (the key is appended), member cap, then the local
-- keys. Returns {{field, instance, field, instance...}, {refused field...}}.
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #all, 2 do
  local exp = tonumber(string.sub(all[i + 1], 17))
  if (not exp) or exp <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live = live + 1
  end
end
local refused = {}
for i = 6, #ARGV do
  local f = ARGV[i]
  local v = redis.call('HGET', KEYS[1], f)
  local mine = v and string.sub(v, 1, 16) == me
  if (not v) and live >= cap then
    refused[#refused + 1] = f
  elseif (not v) or mine then
    if not v then live = live + 1 end
    redis.call('HSET', KEYS[1], f, me .. (now + ttl))
    if not mine then redis.call('PUBLISH', ARGV[3], ARGV[4] .. f) end
  end
end
if #ARGV >= 6 then redis.call('PEXPIRE', KEYS[1], 2 * ttl) end
all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, 16) ~= me then
    out[#out + 1] = all[i]
    out[#out + 1] = string.sub(all[i + 1], 1, 16)
  end
end
return {out, refused}
