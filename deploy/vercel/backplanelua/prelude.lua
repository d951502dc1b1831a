-- Prelude of join.lua and sync.lua: now, in ms, on the Redis clock, so that
-- the instances' own clocks never have to agree.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
