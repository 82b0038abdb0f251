-- purge_dead — forget dead jobs for good: delete their hashes and DLQ entries, one batch.
--
-- KEYS[1] zset   dead    id -> time of death (ms)
-- KEYS[2] stream events
-- ARGV[1] job key prefix
-- ARGV[2] most ids to purge in this call
-- ARGV[3] events MAXLEN
-- Returns {purged, remaining}: ids removed from the DLQ in this call, and how many are
-- left (call again while remaining > 0). A job hash is deleted only while its state is
-- still 'dead'; an id whose hash is gone (or not dead) just leaves the set.
local k_dead, k_events = KEYS[1], KEYS[2]
local job_prefix = ARGV[1]
local limit, maxlen = tonumber(ARGV[2]), ARGV[3]

local ids = redis.call('ZRANGE', k_dead, 0, limit - 1)
for _, id in ipairs(ids) do
  local jk = job_prefix .. id
  local f = redis.call('HMGET', jk, 'state', 'attempt')
  if f[1] == 'dead' then
    redis.call('DEL', jk)
    emit(k_events, maxlen, id, 'purged', f[2])
  end
  redis.call('ZREM', k_dead, id)
end
return {#ids, redis.call('ZCARD', k_dead)}
