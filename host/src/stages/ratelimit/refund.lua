-- Gives tokens back to buckets of `buckets.lua`: the charge of a request that was not forwarded
-- after all (a later stage refused it). One token per listed key (a key listed twice gets two),
-- never beyond the bucket's capacity. A bucket that no longer exists refilled completely and
-- expired, so it is full already.
--
-- KEYS[i]   one bucket: a hash {t = tokens, u = when tokens was computed (seconds)}
-- ARGV[i]   the capacity of KEYS[i]
--
-- Returns the number of buckets given a token.
local given = 0
for i = 1, #KEYS do
  local t = redis.call('HGET', KEYS[i], 't')
  if t then
    local v = math.min(tonumber(ARGV[i]), tonumber(t) + 1)
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', v))
    given = given + 1
  end
end
return given
