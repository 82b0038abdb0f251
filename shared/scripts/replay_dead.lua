-- replay_dead — put dead jobs back to `queued` with fresh attempts (history kept).
--
-- KEYS[1] zset   dead
-- KEYS[2] list   ready
-- KEYS[3] stream events
-- ARGV[1] job key prefix
-- ARGV[2] now in ms, or '' for Redis TIME
-- ARGV[3] events MAXLEN
-- ARGV[4] when no ids follow: how many of the oldest dead jobs to replay
-- ARGV[5..] job ids to replay (optional)
-- Returns {replayed ids, ids that were not dead}. Replaying a job that is no longer
-- dead does nothing, so a repeated replay request is harmless.
local k_dead, k_ready, k_events = KEYS[1], KEYS[2], KEYS[3]
local job_prefix = ARGV[1]
local now = now_ms(ARGV[2])
local maxlen, limit = ARGV[3], tonumber(ARGV[4])

local ids = {}
for i = 5, #ARGV do table.insert(ids, ARGV[i]) end
if #ids == 0 then ids = redis.call('ZRANGE', k_dead, 0, limit - 1) end

local replayed, skipped = {}, {}
for _, id in ipairs(ids) do
  local jk = job_prefix .. id
  if redis.call('HGET', jk, 'state') == 'dead' then
    redis.call('ZREM', k_dead, id)
    redis.call('PERSIST', jk)
    local replays = redis.call('HINCRBY', jk, 'replays', 1)
    redis.call('HSET', jk, 'state', 'queued', 'attempt', 0, 'available_at', now,
      'finished_at', '', 'worker', '', 'lease_until', 0)
    redis.call('LPUSH', k_ready, id)
    emit(k_events, maxlen, id, 'queued', 0, 'from', 'dead', 'replays', replays)
    table.insert(replayed, id)
  else
    redis.call('ZREM', k_dead, id)
    table.insert(skipped, id)
  end
end
return {replayed, skipped}
