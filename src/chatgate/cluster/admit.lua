-- Admit one request of one key, atomically (the limits of limits.MemoryLimiter, shared).
--
-- KEYS: 1 requests window (ZSET id -> time)     2 tokens window (ZSET "id:tokens" -> time)
--       3 tokens in the window (integer)         4 concurrency leases (ZSET id -> expiry)
--       5 budget reservations (ZSET "id:micros" -> expiry)
--       6 micro-USD reserved (integer)           7 micro-USD settled this period (integer)
-- ARGV: 1 now   2 request id   3 rpm   4 tpm   5 tokens   6 max concurrency   7 budget
--       8 micros to reserve   9 lease seconds   10 TTL of the period's spend
--       11 the period's spend read from the database ("" if not read yet)
-- A limit of -1 is no limit. Times are the caller's clock (seconds), not Redis TIME.
-- Returns {"ok", requests, oldest request, tokens, oldest tokens} or the limit that refused:
-- {"rpm", oldest}, {"tpm", time of the entry whose expiry makes room}, {"tpm_never"},
-- {"concurrency"}, {"budget", micro-USD left}, or {"load"} (read the spend and call again).
local now = tonumber(ARGV[1])
local id = ARGV[2]
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local maxc, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local micros = tonumber(ARGV[8])
local lease = tonumber(ARGV[9])
local window = 60
local horizon = now - window
local tok_member = id .. ':' .. ARGV[5]
local resv_member = id .. ':' .. ARGV[8]

local function amount(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- drop what left the window, and the leases of requests that never settled (a dead replica)
local function expire_sum(zset, sum, upto)
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', upto)
  if #gone > 0 then
    local total = 0
    for _, m in ipairs(gone) do total = total + amount(m) end
    redis.call('ZREMRANGEBYSCORE', zset, '-inf', upto)
    redis.call('DECRBY', sum, total)
  end
end
if rpm >= 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon) end
if tpm >= 0 then expire_sum(KEYS[2], KEYS[3], horizon) end
if maxc >= 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) end
if budget >= 0 then expire_sum(KEYS[5], KEYS[6], now) end

-- the same request again (a retried call whose first reply was lost): admitted already
local again = (rpm >= 0 and redis.call('ZSCORE', KEYS[1], id))
  or (tpm >= 0 and redis.call('ZSCORE', KEYS[2], tok_member))
  or (maxc >= 0 and redis.call('ZSCORE', KEYS[4], id))
  or (budget >= 0 and redis.call('ZSCORE', KEYS[5], resv_member))

if not again then
  if rpm >= 0 and redis.call('ZCARD', KEYS[1]) >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', first[2] or ARGV[1]}
  end
  if tpm >= 0 then
    if tokens > tpm then return {'tpm_never'} end
    local sum = tonumber(redis.call('GET', KEYS[3]) or '0')
    if sum + tokens > tpm then
      local need, freed, at = sum + tokens - tpm, 0, ARGV[1]
      local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
      for i = 1, #entries, 2 do
        freed = freed + amount(entries[i])
        at = entries[i + 1]
        if freed >= need then break end
      end
      return {'tpm', at}
    end
  end
  if maxc >= 0 and redis.call('ZCARD', KEYS[4]) >= maxc then return {'concurrency'} end
  if budget >= 0 then
    local spent = redis.call('GET', KEYS[7])
    if not spent then
      if ARGV[11] == '' then return {'load'} end
      -- first use of this period's spend: what the usage rows say (atomic: only one
      -- replica's read is kept, like SET NX)
      spent = ARGV[11]
      redis.call('SET', KEYS[7], spent, 'EX', ARGV[10])
    end
    local reserved = tonumber(redis.call('GET', KEYS[6]) or '0')
    local left = budget - tonumber(spent) - reserved
    if micros > left then return {'budget', tostring(left)} end
  end
end

if rpm >= 0 then
  redis.call('ZADD', KEYS[1], ARGV[1], id)
  redis.call('EXPIRE', KEYS[1], window + 1)
end
if tpm >= 0 then
  if redis.call('ZADD', KEYS[2], ARGV[1], tok_member) == 1 then
    redis.call('INCRBY', KEYS[3], tokens)
  end
  redis.call('EXPIRE', KEYS[2], window + 1)
  redis.call('EXPIRE', KEYS[3], window + 1)
end
if maxc >= 0 then
  redis.call('ZADD', KEYS[4], now + lease, id)
  redis.call('EXPIRE', KEYS[4], lease + 60)
end
if budget >= 0 then
  if redis.call('ZADD', KEYS[5], now + lease, resv_member) == 1 then
    redis.call('INCRBY', KEYS[6], micros)
  end
  redis.call('EXPIRE', KEYS[5], lease + 60)
  redis.call('EXPIRE', KEYS[6], lease + 60)
  redis.call('EXPIRE', KEYS[7], ARGV[10])
end

local out = {'ok', '0', '', '0', ''}
if rpm >= 0 then
  out[2] = tostring(redis.call('ZCARD', KEYS[1]))
  out[3] = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
end
if tpm >= 0 then
  out[4] = redis.call('GET', KEYS[3]) or '0'
  out[5] = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2] or ''
end
return out
