-- recover_worker — take back every job of a worker whose liveness expired.
--
-- KEYS[1] zset   workers  worker id -> liveness deadline (ms)
-- KEYS[2] list   processing:<worker>
-- KEYS[3] zset   leases
-- KEYS[4] list   ready
-- KEYS[5] zset   retry
-- KEYS[6] zset   dead
-- KEYS[7] stream events
-- ARGV[1] job key prefix
-- ARGV[2] worker id
-- ARGV[3] now in ms, or '' for Redis TIME
-- ARGV[4] random seed for the backoff jitter
-- ARGV[5] events MAXLEN
-- ARGV[6] wake channel
-- ARGV[7] queue name
-- Returns {code, retrying, dead, requeued}: code 0 recovered; 6 the worker is alive
-- (its deadline is in the future), nothing done; 2 nothing to recover (another reaper
-- already did: the worker is unregistered and its list gone). Claimed jobs count their
-- attempt and
-- retry or die; ids moved by BLMOVE but never claimed go back to ready uncharged.
local k = {workers = KEYS[1], proc = KEYS[2], leases = KEYS[3], ready = KEYS[4],
  retry = KEYS[5], dead = KEYS[6], events = KEYS[7]}
local job_prefix, worker = ARGV[1], ARGV[2]
local now = now_ms(ARGV[3])
math.randomseed(tonumber(ARGV[4]))

local deadline = tonumber(redis.call('ZSCORE', k.workers, worker))
if deadline and deadline > now then return {6, 0, 0, 0} end
if not deadline and redis.call('EXISTS', k.proc) == 0 then return {2, 0, 0, 0} end

local out = {0, 0, 0, 0}
local ids = redis.call('LRANGE', k.proc, 0, -1)
for i = #ids, 1, -1 do
  local id = ids[i]
  local jk = job_prefix .. id
  local f = redis.call('HMGET', jk, 'state', 'worker')
  if f[1] == 'processing' and f[2] == worker then
    redis.call('ZREM', k.leases, id)
    local state = retry_or_bury(jk, id, now, 'worker ' .. worker .. ' died', false, k,
      ARGV[5], ARGV[6], ARGV[7])
    if state == 'dead' then out[3] = out[3] + 1 else out[2] = out[2] + 1 end
  elseif f[1] == 'queued' then
    redis.call('RPUSH', k.ready, id)
    out[4] = out[4] + 1
  end
end
redis.call('DEL', k.proc)
redis.call('ZREM', k.workers, worker)
return out
