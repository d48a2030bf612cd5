-- Token buckets in Redis, all or nothing: the arithmetic of `ratelimit::Bucket`, run atomically
-- on the server so every replica sees one set of buckets. Time is the server's clock (TIME), so
-- replicas whose clocks disagree still agree on refills.
--
-- KEYS[i]   one bucket: a hash {t = tokens, u = when tokens was computed (seconds)}
-- ARGV[1]   "1": take one token from every bucket, or from none if any has less than one
--           "0": only report the buckets (nothing is written)
-- ARGV[2i], ARGV[2i+1]   capacity and refill rate (tokens per second) of KEYS[i]
--
-- Returns {"1", tokens_1, ..., tokens_n}: the tokens left (or available, when only looking);
--      or {"0", i, tokens_i}: bucket i is empty and nothing was charged.
-- A bucket is given an expiry at the moment it will have refilled completely: a full bucket is
-- the same as a missing one, so Redis forgets idle buckets by itself.
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local charge = ARGV[1] == '1'
local n = #KEYS
local tokens = {}
for i = 1, n do
  local capacity = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 't', 'u')
  local t = capacity
  if state[1] and state[2] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    t = math.min(capacity, tonumber(state[1]) + elapsed * rate)
  end
  if charge and t < 1 then
    return {'0', tostring(i), string.format('%.17g', t)}
  end
  tokens[i] = t
end
local out = {'1'}
for i = 1, n do
  local t = tokens[i]
  if charge then
    local capacity = tonumber(ARGV[2 * i])
    local rate = tonumber(ARGV[2 * i + 1])
    t = t - 1
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', t), 'u', string.format('%.17g', now))
    if rate > 0 then
      -- Milliseconds until full, plus a second of slack; capped at ~31 years.
      local ms = math.min(math.ceil((capacity - t) / rate * 1000) + 1000, 1e12)
      redis.call('PEXPIRE', KEYS[i], string.format('%d', ms))
    else
      redis.call('PERSIST', KEYS[i])
    end
  end
  out[i + 1] = string.format('%.17g', t)
end
return out
