-- expire_leases — the visibility timeout: jobs whose lease ran out retry or die.
--
-- KEYS[1] zset   leases  id -> lease deadline (ms)
-- KEYS[2] zset   retry
-- KEYS[3] zset   dead
-- KEYS[4] stream events
-- ARGV[1] job key prefix
-- ARGV[2] processing list prefix (the job's worker id is appended)
-- ARGV[3] now in ms, or '' for Redis TIME
-- ARGV[4] most leases to expire in this call
-- ARGV[5] random seed for the backoff jitter
-- ARGV[6] events MAXLEN
-- ARGV[7] wake channel
-- ARGV[8] queue name
-- Returns {retrying, dead, ids...}: counts, then the ids whose lease expired.
-- The expired attempt counts: a job that keeps outliving its lease ends in the DLQ.
local k = {leases = KEYS[1], retry = KEYS[2], dead = KEYS[3], events = KEYS[4]}
local job_prefix, proc_prefix = ARGV[1], ARGV[2]
local now = now_ms(ARGV[3])
local limit = tonumber(ARGV[4])
math.randomseed(tonumber(ARGV[5]))

local out = {0, 0}
local ids = redis.call('ZRANGEBYSCORE', k.leases, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k.leases, id)
  local jk = job_prefix .. id
  local f = redis.call('HMGET', jk, 'state', 'worker')
  if f[1] == 'processing' then
    redis.call('LREM', proc_prefix .. f[2], 0, id)
    local state = retry_or_bury(jk, id, now, 'lease expired (visibility timeout)', false, k,
      ARGV[6], ARGV[7], ARGV[8])
    if state == 'dead' then out[2] = out[2] + 1 else out[1] = out[1] + 1 end
    table.insert(out, id)
  end
end
return out
