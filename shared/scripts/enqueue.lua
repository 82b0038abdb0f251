-- enqueue — add one or more jobs to a queue, atomically.
--
-- KEYS[1] list   ready      ids ready to run
-- KEYS[2] zset   scheduled  id -> due time (ms)
-- KEYS[3] stream events
-- ARGV[1] job key prefix        (phx:{q}:job:)
-- ARGV[2] idempotency prefix    (phx:{q}:idem:)
-- ARGV[3] now in ms, or '' for Redis TIME
-- ARGV[4] idempotency window in ms
-- ARGV[5] events MAXLEN
-- ARGV[6] wake channel
-- ARGV[7] queue name
-- ARGV[8] JSON array of jobs: {id, type, payload, max_attempts, timeout_ms, vt_ms,
--         backoff_base_ms, backoff_cap_ms, idem_key, delay_ms, run_at, request_id,
--         traceparent}; run_at (absolute ms, 0 when unset) wins over delay_ms.
-- Returns an array with one {job id, state, duplicate 0|1} per job, in order. A job
-- whose idempotency key is live answers with the first job's id and state, and
-- duplicate = 1; nothing is written for it. So does a job whose id already exists (a
-- client's retry of a call whose reply was lost): enqueue is safe to send twice.
local k_ready, k_scheduled, k_events = KEYS[1], KEYS[2], KEYS[3]
local job_prefix, idem_prefix = ARGV[1], ARGV[2]
local now = now_ms(ARGV[3])
local idem_ttl, maxlen = tonumber(ARGV[4]), ARGV[5]
local channel, queue = ARGV[6], ARGV[7]
local jobs = cjson.decode(ARGV[8])

local out, ready_ids = {}, {}
for _, j in ipairs(jobs) do
  local duplicate_of = false
  if redis.call('EXISTS', job_prefix .. j.id) == 1 then
    duplicate_of = j.id
  elseif j.idem_key ~= nil and j.idem_key ~= '' then
    local ik = idem_prefix .. j.idem_key
    local first = redis.call('GET', ik)
    if first then
      duplicate_of = first
    else
      redis.call('SET', ik, j.id, 'PX', idem_ttl)
    end
  end
  if duplicate_of then
    local state = redis.call('HGET', job_prefix .. duplicate_of, 'state') or 'expired'
    table.insert(out, {duplicate_of, state, 1})
  else
    local due = now + (tonumber(j.delay_ms) or 0)
    if (tonumber(j.run_at) or 0) > 0 then due = tonumber(j.run_at) end
    local state = 'queued'
    if due > now then state = 'scheduled' else due = now end
    local jk = job_prefix .. j.id
    redis.call('HSET', jk, 'id', j.id, 'type', j.type, 'queue', queue, 'payload', j.payload,
      'state', state, 'attempt', 0, 'max_attempts', j.max_attempts,
      'timeout_ms', j.timeout_ms, 'vt_ms', j.vt_ms, 'backoff_base_ms', j.backoff_base_ms,
      'backoff_cap_ms', j.backoff_cap_ms, 'created_at', now, 'available_at', due, 'token', 0)
    if (j.idem_key or '') ~= '' then redis.call('HSET', jk, 'idem_key', j.idem_key) end
    if (j.request_id or '') ~= '' then redis.call('HSET', jk, 'request_id', j.request_id) end
    if (j.traceparent or '') ~= '' then redis.call('HSET', jk, 'traceparent', j.traceparent) end
    if state == 'queued' then
      table.insert(ready_ids, j.id)
    else
      schedule_at(k_scheduled, j.id, due, channel, queue)
    end
    emit(k_events, maxlen, j.id, state, 0, 'type', j.type)
    table.insert(out, {j.id, state, 0})
  end
end
-- one LPUSH per 1,000 ids (in enqueue order), not one per job
for first = 1, #ready_ids, 1000 do
  redis.call('LPUSH', k_ready, unpack(ready_ids, first, math.min(first + 999, #ready_ids)))
end
return out
