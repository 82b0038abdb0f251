-- complete — finish attempts successfully, for each job whose lease the caller still holds.
--
-- Takes a batch so a busy worker completes many jobs in one round trip; each job is
-- checked and written independently, and the whole batch is atomic.
--
-- KEYS[1] list   processing:<worker>
-- KEYS[2] zset   leases
-- KEYS[3] zset   completed  id -> completion time (ms)
-- KEYS[4] stream events
-- ARGV[1] job key prefix        (phx:{q}:job:)
-- ARGV[2] done-mark prefix      (phx:{q}:done:)
-- ARGV[3] now in ms, or '' for Redis TIME
-- ARGV[4] retention of completed jobs in ms
-- ARGV[5] life of the done mark in ms
-- ARGV[6] events MAXLEN
-- ARGV[7..] groups of four: job id, lease token, result (JSON), idempotency key ('' = none)
-- Returns one code per job, in order: 0 completed; 1 stale lease (state or token
-- changed: nothing written for that job); 2 job not found. The done mark is written
-- here and only here, atomically with `completed`.
local k_proc, k_leases, k_completed, k_events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_prefix, done_prefix = ARGV[1], ARGV[2]
local now = now_ms(ARGV[3])
local retention, done_ttl, maxlen = ARGV[4], ARGV[5], ARGV[6]

local codes = {}
for i = 7, #ARGV, 4 do
  local id, token, result, idem = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local jk = job_prefix .. id
  local f = redis.call('HMGET', jk, 'state', 'token', 'attempt')
  if not f[1] then
    table.insert(codes, 2)
  elseif f[1] ~= 'processing' or f[2] ~= token then
    table.insert(codes, 1)
  else
    redis.call('LREM', k_proc, -1, id)
    redis.call('ZREM', k_leases, id)
    redis.call('HSET', jk, 'state', 'completed', 'finished_at', now, 'result', result)
    redis.call('ZADD', k_completed, now, id)
    redis.call('PEXPIRE', jk, retention)
    if idem ~= '' then redis.call('SET', done_prefix .. idem, id, 'PX', done_ttl) end
    emit(k_events, maxlen, id, 'completed', f[3])
    table.insert(codes, 0)
  end
end
return codes
