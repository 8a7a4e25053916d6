-- Settle one request: free its concurrency lease and budget reservation, replace its token
-- estimate with the real count, add its real cost to the period's spend.
--
-- KEYS: 1 tokens window   2 tokens in the window   3 concurrency leases
--       4 budget reservations   5 micro-USD reserved
--       6, 7, 8 the spend of the current total, daily and monthly period
-- ARGV: 1 request id   2 estimated tokens   3 real tokens   4 reserved micros   5 real micros
-- A spend key that does not exist is left alone: it is read from the usage rows (where this
-- cost lands too) when it is next needed.
local id, est, real = ARGV[1], ARGV[2], ARGV[3]
local reserved, cost = ARGV[4], tonumber(ARGV[5])

redis.call('ZREM', KEYS[3], id)
if redis.call('ZREM', KEYS[4], id .. ':' .. reserved) == 1 then
  redis.call('DECRBY', KEYS[5], reserved)
end
if est ~= real then
  local member = id .. ':' .. est
  local at = redis.call('ZSCORE', KEYS[1], member)
  if at then
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZADD', KEYS[1], at, id .. ':' .. real)
    redis.call('INCRBY', KEYS[2], tonumber(real) - tonumber(est))
  end
end
if cost > 0 then
  for i = 6, 8 do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], cost) end
  end
end
return 1
