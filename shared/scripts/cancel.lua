-- cancel — withdraw a job that has not started: scheduled | queued | retrying -> cancelled.
--
-- KEYS[1] hash   job:<id>
-- KEYS[2] list   ready
-- KEYS[3] zset   scheduled
-- KEYS[4] zset   retry
-- KEYS[5] stream events
-- ARGV[1] job id
-- ARGV[2] now in ms, or '' for Redis TIME
-- ARGV[3] events MAXLEN
-- ARGV[4] how long the cancelled record is kept, in ms
-- Returns {code, state}: 0 cancelled; 2 not found; 3 wrong state (the current state is
-- returned, nothing written).
local k_job, k_ready, k_sched, k_retry, k_events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local now = now_ms(ARGV[2])
local maxlen, retention = ARGV[3], ARGV[4]

local f = redis.call('HMGET', k_job, 'state', 'attempt')
local state = f[1]
if not state then return {2, ''} end
if state == 'queued' then
  redis.call('LREM', k_ready, 0, id)
elseif state == 'scheduled' then
  redis.call('ZREM', k_sched, id)
elseif state == 'retrying' then
  redis.call('ZREM', k_retry, id)
else
  return {3, state}
end
redis.call('HSET', k_job, 'state', 'cancelled', 'finished_at', now)
redis.call('PEXPIRE', k_job, retention)
emit(k_events, maxlen, id, 'cancelled', f[2], 'from', state)
return {0, 'cancelled'}
