-- claim — lease jobs a worker moved (or now moves) from `ready` into its processing list.
--
-- KEYS[1] list   ready
-- KEYS[2] list   processing:<worker>   this worker's claimed ids
-- KEYS[3] zset   leases     id -> lease deadline (ms)
-- KEYS[4] zset   completed  id -> completion time (ms)
-- KEYS[5] stream events
-- KEYS[6] string paused     present while the queue is paused
-- ARGV[1] job key prefix
-- ARGV[2] done-mark prefix
-- ARGV[3] worker id
-- ARGV[4] now in ms, or '' for Redis TIME
-- ARGV[5] how many more ids to move from ready (LMOVE RIGHT LEFT) after ARGV[8..]
-- ARGV[6] events MAXLEN
-- ARGV[7] retention of completed jobs in ms
-- ARGV[8] comma-separated job fields to return for each leased job
-- ARGV[9..] ids this worker already moved with BLMOVE
-- Returns {status, jobs, skipped}: status 'ok' or 'paused'; jobs holds, per leased job
-- (fresh token, attempt counted, lease set), the values of the ARGV[8] fields in
-- that order (HMGET: history and results are not sent to the worker); skipped lists ids
-- completed without running because their idempotency key is already done.
-- When paused, the given ids go back to the consuming end of ready and nothing moves.
local k_ready, k_proc, k_leases, k_completed, k_events, k_paused =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local job_prefix, done_prefix, worker = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms(ARGV[4])
local more, maxlen, retention = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local ids = {}
local fields = {}
for name in string.gmatch(ARGV[8], '[^,]+') do table.insert(fields, name) end
for i = 9, #ARGV do table.insert(ids, ARGV[i]) end

if redis.call('EXISTS', k_paused) == 1 then
  for i = #ids, 1, -1 do
    redis.call('LREM', k_proc, 1, ids[i])
    redis.call('RPUSH', k_ready, ids[i])
  end
  return {'paused', {}, {}}
end

for _ = 1, more do
  local id = redis.call('LMOVE', k_ready, k_proc, 'RIGHT', 'LEFT')
  if not id then break end
  table.insert(ids, id)
end

local jobs, skipped = {}, {}
for _, id in ipairs(ids) do
  local jk = job_prefix .. id
  local f = redis.call('HMGET', jk, 'state', 'vt_ms', 'idem_key', 'attempt')
  if f[1] ~= 'queued' then
    redis.call('LREM', k_proc, 0, id)
  elseif f[3] and f[3] ~= '' and redis.call('EXISTS', done_prefix .. f[3]) == 1 then
    redis.call('LREM', k_proc, 0, id)
    redis.call('HSET', jk, 'state', 'completed', 'finished_at', now,
      'result', cjson.encode({skipped = 'idempotency key already done'}))
    redis.call('ZADD', k_completed, now, id)
    redis.call('PEXPIRE', jk, retention)
    emit(k_events, maxlen, id, 'completed', f[4], 'skipped', '1')
    table.insert(skipped, id)
  else
    redis.call('HINCRBY', jk, 'token', 1)
    redis.call('HINCRBY', jk, 'attempt', 1)
    local deadline = now + tonumber(f[2])
    redis.call('HSET', jk, 'state', 'processing', 'worker', worker, 'started_at', now,
      'lease_until', deadline)
    redis.call('ZADD', k_leases, deadline, id)
    emit(k_events, maxlen, id, 'processing', tonumber(f[4]) + 1, 'worker', worker)
    table.insert(jobs, redis.call('HMGET', jk, unpack(fields)))
  end
end
return {'ok', jobs, skipped}
