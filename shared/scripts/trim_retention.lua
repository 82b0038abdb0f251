-- trim_retention — forget completed and dead jobs past their retention; cap the DLQ.
--
-- KEYS[1] zset   completed  id -> completion time (ms)
-- KEYS[2] zset   dead       id -> time of death (ms)
-- ARGV[1] job key prefix
-- ARGV[2] now in ms, or '' for Redis TIME
-- ARGV[3] retention of completed jobs in ms
-- ARGV[4] retention of dead jobs in ms
-- ARGV[5] most dead jobs kept
-- ARGV[6] most ids removed from each set in this call
-- Returns {completed removed, dead removed}. Removing deletes the job hash too.
local k_completed, k_dead = KEYS[1], KEYS[2]
local job_prefix = ARGV[1]
local now = now_ms(ARGV[2])
local keep_completed, keep_dead = tonumber(ARGV[3]), tonumber(ARGV[4])
local dead_max, limit = tonumber(ARGV[5]), tonumber(ARGV[6])

local function forget(zkey, ids)
  for _, id in ipairs(ids) do
    redis.call('ZREM', zkey, id)
    redis.call('DEL', job_prefix .. id)
  end
  return #ids
end

local done = forget(k_completed,
  redis.call('ZRANGEBYSCORE', k_completed, '-inf', now - keep_completed, 'LIMIT', 0, limit))
local dead = forget(k_dead,
  redis.call('ZRANGEBYSCORE', k_dead, '-inf', now - keep_dead, 'LIMIT', 0, limit))
local excess = redis.call('ZCARD', k_dead) - dead_max
if excess > 0 then
  dead = dead + forget(k_dead, redis.call('ZRANGE', k_dead, 0, math.min(excess, limit) - 1))
end
return {done, dead}
