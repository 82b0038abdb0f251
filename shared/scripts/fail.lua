-- fail — end an attempt with an error: retry with backoff, or dead-letter.
--
-- KEYS[1] hash   job:<id>
-- KEYS[2] list   processing:<worker>
-- KEYS[3] zset   leases
-- KEYS[4] zset   retry   id -> due time (ms)
-- KEYS[5] zset   dead    id -> time of death (ms)
-- KEYS[6] stream events
-- ARGV[1] job id
-- ARGV[2] lease token from the claim
-- ARGV[3] error text
-- ARGV[4] '1' for a permanent error (no retry), else '0'
-- ARGV[5] now in ms, or '' for Redis TIME
-- ARGV[6] random seed for the backoff jitter
-- ARGV[7] events MAXLEN
-- ARGV[8] wake channel
-- ARGV[9] queue name
-- Returns {code, state, delay_ms}: code 0 done (state 'retrying' or 'dead');
-- 1 stale lease (nothing written); 2 job not found.
local k_job, k_proc, k_leases = KEYS[1], KEYS[2], KEYS[3]
local k = {retry = KEYS[4], dead = KEYS[5], events = KEYS[6]}
local id, token, err, permanent = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local now = now_ms(ARGV[5])
math.randomseed(tonumber(ARGV[6]))

local f = redis.call('HMGET', k_job, 'state', 'token')
if not f[1] then return {2, '', 0} end
if f[1] ~= 'processing' or f[2] ~= token then return {1, f[1], 0} end

redis.call('LREM', k_proc, 0, id)
redis.call('ZREM', k_leases, id)
local state, delay = retry_or_bury(k_job, id, now, err, permanent, k, ARGV[7], ARGV[8], ARGV[9])
return {0, state, delay}
