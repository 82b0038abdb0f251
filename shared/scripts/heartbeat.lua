-- heartbeat — a worker says it is alive, on Redis's clock.
--
-- KEYS[1] zset   workers  worker id -> liveness deadline (ms)
-- ARGV[1] worker id
-- ARGV[2] how long the worker counts as alive without another heartbeat, in ms
-- ARGV[3] now in ms, or '' for Redis TIME
-- Returns the new deadline in ms.
local k_workers = KEYS[1]
local worker, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local deadline = now + ttl
redis.call('ZADD', k_workers, deadline, worker)
return deadline
