-- Gives tokens back to buckets of `buckets.lua`: the charge of a request that was not forwarded
-- after all (a later stage refused it), or a lease's tokens a replica did not spend
-- (`lease.lua`). Never beyond the bucket's capacity. A bucket that no longer exists refilled
-- completely and expired, so it is full already.
--
-- KEYS[i]      one bucket: a hash {t = tokens, u = when tokens was computed (seconds)}
-- ARGV[2i-1]   the capacity of KEYS[i]
-- ARGV[2i]     how many tokens it gets back (a key may also be listed twice)
--
-- Returns the number of buckets given tokens.
local given = 0
for i = 1, #KEYS do
  local t = redis.call('HGET', KEYS[i], 't')
  if t then
    local v = math.min(tonumber(ARGV[2 * i - 1]), tonumber(t) + tonumber(ARGV[2 * i]))
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', v))
    given = given + 1
  end
end
return given
