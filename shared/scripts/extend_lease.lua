-- extend_lease — push a running job's lease deadline forward (heartbeat of one job).
--
-- KEYS[1] hash   job:<id>
-- KEYS[2] zset   leases
-- ARGV[1] job id
-- ARGV[2] lease token from the claim
-- ARGV[3] lease length in ms from now
-- ARGV[4] now in ms, or '' for Redis TIME
-- Returns {code, deadline}: 0 extended; 1 stale lease (nothing written); 2 not found.
local k_job, k_leases = KEYS[1], KEYS[2]
local id, token, length = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms(ARGV[4])

local f = redis.call('HMGET', k_job, 'state', 'token')
if not f[1] then return {2, 0} end
if f[1] ~= 'processing' or f[2] ~= token then return {1, 0} end
local deadline = now + length
redis.call('ZADD', k_leases, deadline, id)
redis.call('HSET', k_job, 'lease_until', deadline)
return {0, deadline}
