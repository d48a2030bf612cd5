-- Token leases from buckets of `buckets.lua` (same keys, same arithmetic): a replica takes up
-- to `want` tokens of a bucket at once and spends them locally. All or nothing, like
-- `buckets.lua`: if any bucket asked for tokens holds less than one, nothing is taken.
--
-- KEYS[i]                 one bucket: a hash {t = tokens, u = when tokens was computed (seconds)}
-- ARGV[3i-2], ARGV[3i-1]  capacity and refill rate (tokens per second) of KEYS[i]
-- ARGV[3i]                want: take at least one token and up to this many (0: only report)
--
-- Returns {"1", granted_1, tokens_1, ..., granted_n, tokens_n}: the tokens granted and those
--      left in Redis after the grant;
--      or {"0", i, tokens_i}: bucket i is empty and nothing was taken.
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local n = #KEYS
local tokens = {}
for i = 1, n do
  local capacity = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', KEYS[i], 't', 'u')
  local t = capacity
  if state[1] and state[2] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    t = math.min(capacity, tonumber(state[1]) + elapsed * rate)
  end
  if want > 0 and t < 1 then
    return {'0', tostring(i), string.format('%.17g', t)}
  end
  tokens[i] = t
end
local out = {'1'}
for i = 1, n do
  local t = tokens[i]
  local want = tonumber(ARGV[3 * i])
  local granted = 0
  if want > 0 then
    local capacity = tonumber(ARGV[3 * i - 2])
    local rate = tonumber(ARGV[3 * i - 1])
    granted = math.min(want, math.floor(t))
    t = t - granted
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', t), 'u', string.format('%.17g', now))
    if rate > 0 then
      local ms = math.min(math.ceil((capacity - t) / rate * 1000) + 1000, 1e12)
      redis.call('PEXPIRE', KEYS[i], string.format('%d', ms))
    else
      redis.call('PERSIST', KEYS[i])
    end
  end
  out[2 * i] = tostring(granted)
  out[2 * i + 1] = string.format('%.17g', t)
end
return out
