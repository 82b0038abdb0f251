-- requeue — hand a job back to `ready` without charging an attempt (graceful shutdown).
--
-- KEYS[1] hash   job:<id>
-- KEYS[2] list   processing:<worker>
-- KEYS[3] zset   leases
-- KEYS[4] list   ready
-- KEYS[5] stream events
-- ARGV[1] job id
-- ARGV[2] lease token, or '' for an id moved by BLMOVE but never claimed
-- ARGV[3] events MAXLEN
-- Returns {code}: 0 handed back; 1 stale lease or not in the expected state; 2 not found.
-- The id goes to the consuming end of ready, so it runs next.
local k_job, k_proc, k_leases, k_ready, k_events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, token, maxlen = ARGV[1], ARGV[2], ARGV[3]

local f = redis.call('HMGET', k_job, 'state', 'token', 'attempt')
if not f[1] then
  redis.call('LREM', k_proc, 0, id)
  return {2}
end
if token == '' then
  if f[1] ~= 'queued' then return {1} end
  redis.call('LREM', k_proc, 0, id)
  redis.call('RPUSH', k_ready, id)
  return {0}
end
if f[1] ~= 'processing' or f[2] ~= token then return {1} end
redis.call('LREM', k_proc, 0, id)
redis.call('ZREM', k_leases, id)
local attempt = redis.call('HINCRBY', k_job, 'attempt', -1)
redis.call('HSET', k_job, 'state', 'queued', 'worker', '', 'lease_until', 0)
redis.call('RPUSH', k_ready, id)
emit(k_events, maxlen, id, 'queued', attempt, 'from', 'handed_back')
return {0}
