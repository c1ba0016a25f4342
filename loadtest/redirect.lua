-- wrk script used by bench_redirect.py: counts responses by status, stops cleanly, can pace.
--
--   wrk -t1 -c32 -d12s -s loadtest/redirect.lua URL -- <duration_s> <rate_per_thread>
--
-- * Clean stop: after <duration_s> no connection sends a new request; the ones in flight still
--   get their answer (wrk's -d must be a little longer). So every request the server received
--   is counted, and the count of 302s can be compared exactly with what Redis holds.
-- * Pacing (<rate_per_thread> > 0): the thread's requests are given send slots 1/rate apart on
--   one schedule shared by its connections; delay() holds each request until its slot. A
--   connection that comes back late sends at once, so the schedule catches up; how far it fell
--   behind is reported as max_lag_ms. wrk measures latency from the actual send.
-- * done() prints one line, "BENCH_JSON {...}", that bench_redirect.py parses.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local NEVER_MS = 3600 * 1000 -- "not before wrk stops": the delay that ends a connection's run

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread state. Globals, because done() reads them with thread:get().
statuses = {}
first_ms = -1
last_ms = -1
max_lag_ms = 0
local duration_ms, interval_ms, deadline_ms, next_slot_ms

function init(args)
  duration_ms = tonumber(args[1]) * 1000
  local rate = tonumber(args[2] or "0")
  interval_ms = rate > 0 and 1000 / rate or 0
end

function delay()
  local now = now_ms()
  if first_ms < 0 then
    first_ms = now
    deadline_ms = now + duration_ms
    next_slot_ms = now
  end
  if now >= deadline_ms then
    return NEVER_MS
  end
  if interval_ms == 0 then
    return 0
  end
  local slot = next_slot_ms
  next_slot_ms = slot + interval_ms
  if slot >= deadline_ms then
    return NEVER_MS
  end
  if slot <= now then
    if now - slot > max_lag_ms then
      max_lag_ms = now - slot
    end
    return 0
  end
  return math.floor(slot - now + 0.5)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  last_ms = now_ms()
end

function done(summary, latency, requests)
  local counts, first, last, lag = {}, nil, nil, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    local f, l = thread:get("first_ms"), thread:get("last_ms")
    if f >= 0 and (first == nil or f < first) then first = f end
    if l >= 0 and (last == nil or l > last) then last = l end
    lag = math.max(lag, thread:get("max_lag_ms"))
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"statuses": {%s}, "window_ms": %.3f, "max_lag_ms": %.3f, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
    table.concat(parts, ", "), (first and last) and (last - first) or 0, lag,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
