"""The Lua scripts behind every atomic transition of run state (see engine/store.py for their callers).

Each script runs inside Redis as one atomic step, so claims, completions and the release of
successors cannot interleave however many workers race.
"""

from engine.states import RUN_TRANSITIONS, STEP_TRANSITIONS, Status


def _lua_table(table: dict[Status, frozenset[Status]]) -> str:
    rows = (f"{old.value} = {{{', '.join(f'{new.value} = true' for new in sorted(news))}}}" for old, news in table.items())
    return "{" + ", ".join(rows) + "}"


TRANSITIONS = f"""
-- Generated from engine/states.py, the one place statuses and their transitions are decided.
local STEP_NEXT = {_lua_table(STEP_TRANSITIONS)}
local RUN_NEXT = {_lua_table(RUN_TRANSITIONS)}
local function step_to(statuses, step, new)
  local old = redis.call('HGET', statuses, step) or 'pending'
  if not (STEP_NEXT[old] or {{}})[new] then
    error('step ' .. step .. ': ' .. old .. ' -> ' .. new .. ' is not in the status table (engine/states.py)')
  end
  redis.call('HSET', statuses, step, new)
end
local function run_to(run_key, new, ...)
  local old = redis.call('HGET', run_key, 'status') or 'pending'
  if not (RUN_NEXT[old] or {{}})[new] then
    error('run: ' .. old .. ' -> ' .. new .. ' is not in the status table (engine/states.py)')
  end
  redis.call('HSET', run_key, 'status', new, ...)
end
"""

CLAIM = TRANSITIONS + """
local run_key, statuses, remaining, detail, events, leases, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local step, now, lease, worker, member, cleanup, run_id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local run_status = redis.call('HGET', run_key, 'status')
if run_status ~= 'running' and not (cleanup == '1' and redis.call('HGET', run_key, 'cleanup') == 'running') then
  redis.call('ZREM', timers, member)
  if redis.call('HGET', statuses, step) == 'running'
      and tonumber(redis.call('HGET', detail, 'lease_until') or '0') <= now then
    -- its worker died after the run had ended: record that instead of leaving it running forever
    step_to(statuses, step, 'failed')
    redis.call('HSET', detail, 'status', 'failed', 'finished', now, 'error', 'its worker was lost after the run had ended')
    redis.call('HDEL', detail, 'lease_until')
    redis.call('ZREM', leases, member)
    redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', 'failed',
      'error', 'its worker was lost after the run had ended', 't', now)
    if cleanup == '1' then
      if redis.call('HINCRBY', run_key, 'n_cleanup_done', 1) == tonumber(redis.call('HGET', run_key, 'n_cleanup')) then
        redis.call('HSET', run_key, 'cleanup', 'done')
      end
      return {'orphaned', ''}
    end
    local active = redis.call('HINCRBY', run_key, 'n_active', -1)
    if active <= 0 and (run_status == 'failed' or run_status == 'cancelled')
        and tonumber(redis.call('HGET', run_key, 'n_cleanup') or '0') > 0
        and redis.call('HSETNX', run_key, 'cleanup', 'running') == 1 then
      redis.call('XADD', events, '*', 'type', 'cleanup', 'status', 'running', 't', now)
      return {'orphaned', 'start_cleanup'}
    end
    return {'orphaned', ''}
  end
  if redis.call('HGET', statuses, step) ~= 'running' then redis.call('ZREM', leases, member) end
  return {'run_' .. tostring(run_status)}
end
for i = 8, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], run_id)
  if not score or tonumber(score) < now then return {'lost_lock', KEYS[i]} end
end
local st = redis.call('HGET', statuses, step)
local new_attempt = false
local late = -1
if st == 'pending' then
  if tonumber(redis.call('HGET', remaining, step) or '0') > 0 then return {'not_ready'} end
  new_attempt = true
  redis.call('HINCRBY', run_key, 'n_active', 1)
elseif st == 'waiting' then
  local wake = tonumber(redis.call('HGET', detail, 'wake_at') or '0')
  if wake > now then return {'early', tostring(wake)} end
  local wait_kind = redis.call('HGET', detail, 'wait_kind')
  new_attempt = wait_kind == 'retry'
  -- how long after its due time a poll got a worker: the cost of polls above capacity, shown in status
  if wait_kind == 'poll' then
    late = now - wake
    redis.call('HSET', detail, 'poll_late', string.format('%.3f', late))
  end
elseif st == 'running' then
  local until_ = tonumber(redis.call('HGET', detail, 'lease_until') or '0')
  if until_ > now then return {'busy'} end
  new_attempt = true
else
  redis.call('ZREM', timers, member)
  return {'done', tostring(st)}
end
local token = redis.call('HINCRBY', detail, 'token', 1)
local attempt = tonumber(redis.call('HGET', detail, 'attempt') or '0')
if new_attempt then attempt = redis.call('HINCRBY', detail, 'attempt', 1) end
step_to(statuses, step, 'running')
redis.call('HSET', detail, 'lease_until', now + lease, 'worker', worker, 'status', 'running')
if not redis.call('HGET', detail, 'started') then redis.call('HSET', detail, 'started', now) end
redis.call('ZADD', leases, now + lease, member)
redis.call('ZREM', timers, member)
local kind = 'running'
if st == 'running' then kind = 'takeover' end
if late >= 0 then
  redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', 'running', 'kind', kind,
    'attempt', attempt, 'worker', worker, 'late', string.format('%.3f', late), 't', now)
else
  redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', 'running', 'kind', kind,
    'attempt', attempt, 'worker', worker, 't', now)
end
return {'ok', tostring(token), tostring(attempt),
  redis.call('HGET', detail, 'memory') or '{}', redis.call('HGET', detail, 'decision') or '', kind}
"""

# Shared by complete and skip: release successors of a step that counts as done, finish the run when
# every step is done, and start the cleanup phase once a failed or cancelled run has nothing active.
RELEASE = TRANSITIONS + """
local function release(run_key, statuses, remaining, run_status, cleanup, first_succ, timers, run_id, now, redeliver)
  -- A released step also gets a durable timer: if its message is lost (a worker or Redis dies with it
  -- before it is claimed), the ticker publishes it again. The claim removes the timer.
  local ready = {}
  for i = first_succ, #ARGV do
    local succ = ARGV[i]
    local left = redis.call('HINCRBY', remaining, succ, -1)
    if left == 0 and redis.call('HGET', statuses, succ) == 'pending'
        and (run_status == 'running' or cleanup == '1') then
      table.insert(ready, succ)
      redis.call('ZADD', timers, now + redeliver, run_id .. '|' .. succ)
    end
  end
  return ready
end

-- When a run fails, its parked steps stop too (they are cancelled; resume runs them again), so the
-- run has nothing active and its cleanup can start.
local function stop_waiting(run_key, statuses, timers, run_id, events, now)
  local all = redis.call('HGETALL', statuses)
  for i = 1, #all, 2 do
    if all[i + 1] == 'waiting' then
      step_to(statuses, all[i], 'cancelled')
      redis.call('ZREM', timers, run_id .. '|' .. all[i])
      redis.call('HINCRBY', run_key, 'n_active', -1)
      redis.call('XADD', events, '*', 'type', 'step', 'step', all[i], 'status', 'cancelled',
        'reason', 'the run failed', 't', now)
    end
  end
end

local function settle(run_key, events, now, run_status, counted_done, cleanup)
  if cleanup == '1' then
    local done = redis.call('HINCRBY', run_key, 'n_cleanup_done', 1)
    if done == tonumber(redis.call('HGET', run_key, 'n_cleanup')) then
      redis.call('HSET', run_key, 'cleanup', 'done')
      redis.call('XADD', events, '*', 'type', 'cleanup', 'status', 'done', 't', now)
    end
    return ''
  end
  if counted_done then
    local done = redis.call('HINCRBY', run_key, 'n_done', 1)
    if done == tonumber(redis.call('HGET', run_key, 'n_steps')) and run_status == 'running' then
      run_to(run_key, 'succeeded', 'finished', now)
      redis.call('XADD', events, '*', 'type', 'run', 'status', 'succeeded', 't', now)
      return ''
    end
  end
  local st = redis.call('HGET', run_key, 'status')
  if (st == 'failed' or st == 'cancelled') and tonumber(redis.call('HGET', run_key, 'n_active')) <= 0
      and tonumber(redis.call('HGET', run_key, 'n_cleanup') or '0') > 0
      and redis.call('HSETNX', run_key, 'cleanup', 'running') == 1 then
    redis.call('XADD', events, '*', 'type', 'cleanup', 'status', 'running', 't', now)
    return 'start_cleanup'
  end
  return ''
end
"""

COMPLETE = RELEASE + """
local run_key, statuses, remaining, detail, events, leases, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local step, token, status, result, err, now, member, memory = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
local cleanup, budget, budget_limit, run_id, redeliver = ARGV[9], ARGV[10], tonumber(ARGV[11]), ARGV[12], tonumber(ARGV[13])
if redis.call('HGET', detail, 'token') ~= token or redis.call('HGET', statuses, step) ~= 'running' then
  return {'stale', ''}
end
step_to(statuses, step, status)
redis.call('HSET', detail, 'status', status, 'finished', now, 'result', result, 'error', err, 'memory', memory)
redis.call('HDEL', detail, 'lease_until', 'wake_at', 'wait_kind', 'waiting_reason')
redis.call('ZREM', leases, member)
redis.call('HINCRBY', run_key, 'n_active', -1)
redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', status, 'error', err, 't', now)
local run_status = redis.call('HGET', run_key, 'status')
local flags = ''
local counts_done = status == 'succeeded' or status == 'skipped'
if status == 'failed' and cleanup ~= '1' then
  if budget ~= '' and redis.call('HINCRBY', run_key, 'budget:' .. budget, 1) <= budget_limit then
    counts_done = true
    flags = 'tolerated'
    redis.call('XADD', events, '*', 'type', 'budget', 'step', step, 'group', budget,
      'used', redis.call('HGET', run_key, 'budget:' .. budget), 'limit', budget_limit, 't', now)
  else
    redis.call('HINCRBY', run_key, 'n_failed', 1)
    if run_status == 'running' then
      local reason = 'step ' .. step .. ' failed: ' .. err
      if budget ~= '' then reason = reason .. ' (failure budget of ' .. budget .. ' exhausted: ' .. budget_limit .. ' allowed)' end
      run_to(run_key, 'failed', 'reason', reason, 'finished', now)
      redis.call('XADD', events, '*', 'type', 'run', 'status', 'failed', 'reason', reason, 't', now)
      stop_waiting(run_key, statuses, timers, run_id, events, now)
      run_status = 'failed'
    end
  end
end
local ready = {}
if counts_done or cleanup == '1' then
  ready = release(run_key, statuses, remaining, run_status, cleanup, 14, timers, run_id, now, redeliver)
end
local settled = settle(run_key, events, now, run_status, counts_done, cleanup)
if settled ~= '' then flags = flags .. ',' .. settled end
local out = {'ok', flags}
for _, s in ipairs(ready) do table.insert(out, s) end
return out
"""

FAIL_RUN = RELEASE + """
local run_key, statuses, events, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local reason, now, run_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local st = redis.call('HGET', run_key, 'status')
if st ~= 'running' and st ~= 'pending' and st ~= 'waiting' then return {'not_active', tostring(st)} end
run_to(run_key, 'failed', 'reason', reason, 'finished', now)
redis.call('XADD', events, '*', 'type', 'run', 'status', 'failed', 'reason', reason, 't', now)
stop_waiting(run_key, statuses, timers, run_id, events, now)
return {'ok', tostring(st)}
"""

SKIP = RELEASE + """
local run_key, statuses, remaining, detail, events, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local step, now, reason, run_id, redeliver = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('HGET', statuses, step) ~= 'pending' then return {'stale', ''} end
step_to(statuses, step, 'skipped')
redis.call('HSET', detail, 'status', 'skipped', 'finished', now, 'error', reason)
redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', 'skipped', 'reason', reason, 't', now)
local run_status = redis.call('HGET', run_key, 'status')
local ready = release(run_key, statuses, remaining, run_status, '0', 6, timers, run_id, now, redeliver)
local settled = settle(run_key, events, now, run_status, true, '0')
local out = {'ok', settled}
for _, s in ipairs(ready) do table.insert(out, s) end
return out
"""

WAIT = TRANSITIONS + """
local statuses, detail, events, leases, timers, run_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local step, token, kind, wake, reason, memory, now, member = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local cleanup = ARGV[9]
if redis.call('HGET', detail, 'token') ~= token or redis.call('HGET', statuses, step) ~= 'running' then
  return 0
end
local run_status = redis.call('HGET', run_key, 'status')
if cleanup ~= '1' and run_status ~= 'running' then
  -- the run failed or was cancelled while this step ran: it stops here instead of waiting for ever
  step_to(statuses, step, 'cancelled')
  redis.call('HSET', detail, 'status', 'cancelled', 'finished', now, 'memory', memory)
  redis.call('HDEL', detail, 'lease_until')
  redis.call('ZREM', leases, member)
  redis.call('ZREM', timers, member)
  redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', 'cancelled',
    'reason', 'the run is ' .. tostring(run_status), 't', now)
  local active = redis.call('HINCRBY', run_key, 'n_active', -1)
  if active <= 0 and (run_status == 'failed' or run_status == 'cancelled')
      and tonumber(redis.call('HGET', run_key, 'n_cleanup') or '0') > 0
      and redis.call('HSETNX', run_key, 'cleanup', 'running') == 1 then
    redis.call('XADD', events, '*', 'type', 'cleanup', 'status', 'running', 't', now)
    return 2
  end
  return 3
end
-- a decision recorded while the gate was still running (between its claim and this park) wakes it now
if kind == 'approval' and redis.call('HEXISTS', detail, 'decision') == 1 then wake = now end
step_to(statuses, step, 'waiting')
redis.call('HSET', detail, 'status', 'waiting', 'wake_at', wake, 'wait_kind', kind, 'waiting_reason', reason, 'memory', memory)
redis.call('HDEL', detail, 'lease_until')
redis.call('ZREM', leases, member)
redis.call('ZADD', timers, wake, member)
redis.call('XADD', events, '*', 'type', 'step', 'step', step, 'status', 'waiting', 'kind', kind, 'reason', reason,
  'wake_at', wake, 't', now)
return 1
"""

HEARTBEAT = """
local detail, leases = KEYS[1], KEYS[2]
local token, until_, member, memory = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if redis.call('HGET', detail, 'token') ~= token or redis.call('HGET', detail, 'status') ~= 'running' then return 0 end
redis.call('HSET', detail, 'lease_until', until_, 'memory', memory)
redis.call('ZADD', leases, until_, member)
return 1
"""

POP_DUE = """
local zset, now, rearm, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(due) do redis.call('ZADD', zset, now + rearm, m) end
return due
"""

RELEASE_WORKER = """
-- Every step a lost process was running: its lease ends now, so the ticker republishes it at once.
local leases, prefix, worker, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local released = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', leases, now, '+inf')) do
  local sep = string.find(member, '|', 1, true)
  local detail = prefix .. 'run:' .. string.sub(member, 1, sep - 1) .. ':step:' .. string.sub(member, sep + 1)
  if redis.call('HGET', detail, 'worker') == worker and redis.call('HGET', detail, 'status') == 'running' then
    redis.call('HSET', detail, 'lease_until', now)
    redis.call('ZADD', leases, now, member)
    table.insert(released, member)
  end
end
return released
"""

CANCEL = TRANSITIONS + """
local run_key, statuses, events, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, by, run_id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local st = redis.call('HGET', run_key, 'status')
if st ~= 'running' and st ~= 'pending' and st ~= 'waiting' and st ~= 'failed' then return {'not_active', tostring(st)} end
run_to(run_key, 'cancelled', 'reason', 'cancelled by ' .. by, 'finished', now)
local keep = {}
for i = 4, #ARGV do keep[ARGV[i]] = true end
local all = redis.call('HGETALL', statuses)
local running = {'ok', ''}
for i = 1, #all, 2 do
  local step, s = all[i], all[i + 1]
  if keep[step] then
    -- a cleanup step: it runs after the cancel
  elseif s == 'pending' or s == 'waiting' then
    step_to(statuses, step, 'cancelled')
    redis.call('ZREM', timers, run_id .. '|' .. step)
    if s == 'waiting' then redis.call('HINCRBY', run_key, 'n_active', -1) end
  elseif s == 'running' then
    table.insert(running, step)
  end
end
redis.call('ZREM', timers, run_id .. '|__start__')
redis.call('XADD', events, '*', 'type', 'run', 'status', 'cancelled', 'reason', 'cancelled by ' .. by, 't', now)
if #running == 2 and st ~= 'failed' and tonumber(redis.call('HGET', run_key, 'n_cleanup') or '0') > 0
    and redis.call('HSETNX', run_key, 'cleanup', 'running') == 1 then
  running[2] = 'start_cleanup'
  redis.call('XADD', events, '*', 'type', 'cleanup', 'status', 'running', 't', now)
end
return running
"""


ACQUIRE = """
local run_id, now, lease, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local holding = {pending = true, running = true, waiting = true, failed = true}
for i, key in ipairs(KEYS) do
  local holders = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local others = {}
  for j = 1, #holders, 2 do
    local h, score = holders[j], tonumber(holders[j + 1])
    if h ~= run_id then
      local st = redis.call('HGET', prefix .. 'run:' .. h, 'status')
      if score < now or not st or not holding[st] then
        redis.call('ZREM', key, h)
      else
        table.insert(others, h)
      end
    end
  end
  if #others >= tonumber(ARGV[4 + i]) then return {'busy', key, table.concat(others, ',')} end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, run_id)
  redis.call('SADD', prefix .. 'locks', key)
end
return {'ok'}
"""

RENEW = """
local now, lease, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local holding = {pending = true, running = true, waiting = true, failed = true}
local renewed = 0
for _, key in ipairs(redis.call('SMEMBERS', prefix .. 'locks')) do
  for _, h in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local st = redis.call('HGET', prefix .. 'run:' .. h, 'status')
    local cl = redis.call('HGET', prefix .. 'run:' .. h, 'cleanup')
    if st and (holding[st] or cl == 'running') then
      if redis.call('ZADD', key, 'XX', 'GT', now + lease, h) == 0 then renewed = renewed + 1 end
    else
      redis.call('ZREM', key, h)
    end
  end
  if redis.call('ZCARD', key) == 0 then redis.call('SREM', prefix .. 'locks', key) end
end
return renewed
"""
