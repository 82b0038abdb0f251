-- complete — finish an attempt successfully, if the caller still holds the lease.
--
-- KEYS[1] hash   job:<id>
-- KEYS[2] list   processing:<worker>
-- KEYS[3] zset   leases
-- KEYS[4] zset   completed
-- KEYS[5] stream events
-- KEYS[6] string done:<idempotency key>   (only when the job has one)
-- ARGV[1] job id
-- ARGV[2] lease token from the claim
-- ARGV[3] result (JSON)
-- ARGV[4] now in ms, or '' for Redis TIME
-- ARGV[5] retention of completed jobs in ms
-- ARGV[6] life of the done mark in ms
-- ARGV[7] events MAXLEN
-- Returns {code}: 0 completed; 1 stale lease (state or token changed: nothing written);
-- 2 job not found. The done mark is written here and only here, atomically with
-- `completed`.
local k_job, k_proc, k_leases, k_completed, k_events, k_done =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, token, result = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms(ARGV[4])
local retention, done_ttl, maxlen = ARGV[5], ARGV[6], ARGV[7]

local f = redis.call('HMGET', k_job, 'state', 'token', 'attempt')
if not f[1] then return {2} end
if f[1] ~= 'processing' or f[2] ~= token then return {1} end

redis.call('LREM', k_proc, 0, id)
redis.call('ZREM', k_leases, id)
redis.call('HSET', k_job, 'state', 'completed', 'finished_at', now, 'result', result)
redis.call('ZADD', k_completed, now, id)
redis.call('PEXPIRE', k_job, retention)
if k_done then redis.call('SET', k_done, id, 'PX', done_ttl) end
emit(k_events, maxlen, id, 'completed', f[3])
return {0}
