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
-- ARGV[8] comma-separated job fields to return for each leased job; must include
--         state, attempt, token, vt_ms, idem_key, worker, started_at and lease_until
-- ARGV[9..] ids this worker already moved with BLMOVE
-- Returns {status, jobs, skipped}: status 'ok' or 'paused'; jobs holds, per leased job
-- (fresh token, attempt counted, lease set), the values of the ARGV[8] fields in
-- that order as they are after the claim (history and results are not sent to the
-- worker); skipped lists ids completed without running because their idempotency key
-- is already done. Each job is read once and written once (one HMGET, one HSET).
-- When paused, the given ids go back to the consuming end of ready and nothing moves.
local k_ready, k_proc, k_leases, k_completed, k_events, k_paused =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local job_prefix, done_prefix, worker = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms(ARGV[4])
local more, maxlen, retention = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local ids = {}
local fields, at = {}, {}
for name in string.gmatch(ARGV[8], '[^,]+') do
  table.insert(fields, name)
  at[name] = #fields
end
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
  local v = redis.call('HMGET', jk, unpack(fields))
  local idem, attempt = v[at.idem_key], tonumber(v[at.attempt]) or 0
  if v[at.state] ~= 'queued' then
    redis.call('LREM', k_proc, 0, id)
  elseif idem and idem ~= '' and redis.call('EXISTS', done_prefix .. idem) == 1 then
    redis.call('LREM', k_proc, 0, id)
    redis.call('HSET', jk, 'state', 'completed', 'finished_at', now,
      'result', cjson.encode({skipped = 'idempotency key already done'}))
    redis.call('ZADD', k_completed, now, id)
    redis.call('PEXPIRE', jk, retention)
    emit(k_events, maxlen, id, 'completed', attempt, 'skipped', '1')
    table.insert(skipped, id)
  else
    local token = tostring((tonumber(v[at.token]) or 0) + 1)
    local deadline = tostring(now + tonumber(v[at.vt_ms]))
    attempt = tostring(attempt + 1)
    local started = tostring(now)
    redis.call('HSET', jk, 'state', 'processing', 'worker', worker, 'started_at', started,
      'lease_until', deadline, 'token', token, 'attempt', attempt)
    redis.call('ZADD', k_leases, deadline, id)
    emit(k_events, maxlen, id, 'processing', attempt, 'worker', worker)
    v[at.state], v[at.worker], v[at.started_at] = 'processing', worker, started
    v[at.lease_until], v[at.token], v[at.attempt] = deadline, token, attempt
    table.insert(jobs, v)
  end
end
return {'ok', jobs, skipped}
