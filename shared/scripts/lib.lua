-- lib.lua — helpers prepended to every transition script when it is loaded.
-- Not a transition itself: it defines local functions only and touches no key
-- except through the arguments its callers pass.

-- Milliseconds from Redis's own clock, unless the caller injected `now` (tests).
local function now_ms(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Append one lifecycle event to the queue's capped stream.
local function emit(events_key, maxlen, id, event, attempt, ...)
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*',
    'job', id, 'event', event, 'attempt', attempt, ...)
end

-- Add to a due-time sorted set; publish a wake-up when it becomes the new head.
local function schedule_at(zkey, id, due, channel, queue)
  local head = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  redis.call('ZADD', zkey, due, id)
  if channel ~= '' and (head[2] == nil or due < tonumber(head[2])) then
    redis.call('PUBLISH', channel, queue)
  end
end

-- Exponential backoff with jitter and a floor: uniform in [base, min(cap, base*2^(n-1))].
local function backoff_ms(attempt, base, cap)
  local ceiling = base * 2 ^ (math.max(attempt, 1) - 1)
  if ceiling > cap then ceiling = cap end
  if ceiling < base then ceiling = base end
  return math.floor(base + math.random() * (ceiling - base))
end

-- Record the attempt that just ended in the job's JSON history (bounded to 50 entries).
local function append_history(jk, entry)
  local raw = redis.call('HGET', jk, 'history')
  local history = {}
  if raw and raw ~= '' then history = cjson.decode(raw) end
  table.insert(history, entry)
  while #history > 50 do table.remove(history, 1) end
  redis.call('HSET', jk, 'history', cjson.encode(history))
end

-- An attempt failed (handler error, lease expiry, dead worker): schedule a retry with
-- backoff, or bury the job in the DLQ when attempts are spent or the error is permanent.
-- `k` holds the keys: retry, dead, events. Returns the new state and the delay.
local function retry_or_bury(jk, id, now, err, permanent, k, maxlen, channel, queue)
  local f = redis.call('HMGET', jk, 'attempt', 'max_attempts', 'backoff_base_ms',
    'backoff_cap_ms', 'worker', 'started_at')
  local attempt = tonumber(f[1]) or 0
  local max_attempts = tonumber(f[2]) or 1
  append_history(jk, {attempt = attempt, worker = f[5] or '', startedAt = tonumber(f[6]) or 0,
    finishedAt = now, error = err})
  if permanent or attempt >= max_attempts then
    redis.call('HSET', jk, 'state', 'dead', 'finished_at', now, 'last_error', err)
    redis.call('ZADD', k.dead, now, id)
    emit(k.events, maxlen, id, 'dead', attempt, 'error', err)
    return 'dead', 0
  end
  local delay = backoff_ms(attempt, tonumber(f[3]), tonumber(f[4]))
  redis.call('HSET', jk, 'state', 'retrying', 'available_at', now + delay, 'last_error', err)
  schedule_at(k.retry, id, now + delay, channel, queue)
  emit(k.events, maxlen, id, 'retrying', attempt, 'delay_ms', delay, 'error', err)
  return 'retrying', delay
end

-- ---------------------------------------------------------------------------------
