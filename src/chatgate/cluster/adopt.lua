-- After an outage: count a request that the local fallback admitted while Redis was down,
-- so that the shared limits are exact again at once (the window it still occupies, and its
-- lease while it is still running). Idempotent: adopting twice changes nothing.
--
-- KEYS: as admit.lua's 1-6.
-- ARGV: 1 admitted at   2 request id   3 rpm set (1/0)   4 tpm set (1/0)   5 tokens
--       6 concurrency limited (1/0)   7 micros reserved (0: none, or settled)
--       8 lease expiry (0: settled already)   9 now   10 lease seconds
local at, id = tonumber(ARGV[1]), ARGV[2]
local lease_until = tonumber(ARGV[8])
local now = tonumber(ARGV[9])
local ttl = tonumber(ARGV[10]) + 60  -- as admit.lua sets it: never shortens a key's life
if at > now - 60 then
  if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    redis.call('EXPIRE', KEYS[1], 61)
  end
  if ARGV[4] == '1' then
    if redis.call('ZADD', KEYS[2], ARGV[1], id .. ':' .. ARGV[5]) == 1 then
      redis.call('INCRBY', KEYS[3], ARGV[5])
    end
    redis.call('EXPIRE', KEYS[2], 61)
    redis.call('EXPIRE', KEYS[3], 61)
  end
end
if lease_until > now then
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[4], lease_until, id)
    redis.call('EXPIRE', KEYS[4], ttl)
  end
  if tonumber(ARGV[7]) > 0 then
    if redis.call('ZADD', KEYS[5], lease_until, id .. ':' .. ARGV[7]) == 1 then
      redis.call('INCRBY', KEYS[6], ARGV[7])
    end
    redis.call('EXPIRE', KEYS[5], ttl)
    redis.call('EXPIRE', KEYS[6], ttl)
  end
end
return 1
