-- promote_due — move due jobs (delayed and retries whose backoff ended) to `ready`.
--
-- KEYS[1] zset   scheduled  id -> due time (ms)
-- KEYS[2] zset   retry      id -> due time (ms)
-- KEYS[3] list   ready
-- KEYS[4] stream events
-- ARGV[1] job key prefix
-- ARGV[2] now in ms, or '' for Redis TIME
-- ARGV[3] most jobs to move in this call
-- ARGV[4] events MAXLEN
-- Returns {promoted, next due ms or -1, now}. When promoted equals the limit more may
-- be due at once. Ids whose job is gone or no longer waiting are dropped, not promoted.
local k_sched, k_retry, k_ready, k_events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_prefix = ARGV[1]
local now = now_ms(ARGV[2])
local limit, maxlen = tonumber(ARGV[3]), ARGV[4]

local promoted = 0
for _, z in ipairs({{k_sched, 'scheduled'}, {k_retry, 'retrying'}}) do
  if promoted < limit then
    local ids = redis.call('ZRANGEBYSCORE', z[1], '-inf', now, 'LIMIT', 0, limit - promoted)
    for _, id in ipairs(ids) do
      redis.call('ZREM', z[1], id)
      local jk = job_prefix .. id
      local f = redis.call('HMGET', jk, 'state', 'attempt')
      if f[1] == z[2] then
        redis.call('HSET', jk, 'state', 'queued')
        redis.call('LPUSH', k_ready, id)
        emit(k_events, maxlen, id, 'queued', f[2], 'from', z[2])
        promoted = promoted + 1
      end
    end
  end
end

local next_due = -1
for _, z in ipairs({k_sched, k_retry}) do
  local head = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if head[2] ~= nil then
    local due = tonumber(head[2])
    if next_due < 0 or due < next_due then next_due = due end
  end
end
return {promoted, next_due, now}
