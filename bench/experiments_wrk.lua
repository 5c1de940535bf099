-- wrk script for bench/experiments.sh. XB_MODE picks the request:
--   evaluate  POST /v1/evaluate   {"attributes":{"id":UNIT,"country":"US"}}
--   gbeval    POST /api/eval/KEY  the same body (GrowthBook remote evaluation)
--   events    POST /v1/events     XB_BATCH events per request (half exposures,
--             half value events of the same units), every idempotency key
--             unique: XB_RUN (one per wrk run) .. thread id .. request counter.
-- Units cycle over 100,000 per thread. At the end prints one JSON line
-- (prefix "JSON ") with the counts and latency percentiles.
-- In events mode a 429 answer (the service is behind) pauses every
-- connection of the thread for its Retry-After seconds, as a client should,
-- instead of resending at once: the run then measures accepted batches, and
-- "refused" counts the 429s (they are also in wrk's status_errors and
-- requests). XB_IGNORE_RETRY_AFTER=1 resends at once (saturation runs).
local mode = os.getenv("XB_MODE") or "evaluate"
local batch = tonumber(os.getenv("XB_BATCH") or "1000")
local run = os.getenv("XB_RUN") or tostring(os.time())
local experiment = os.getenv("XB_EXPERIMENT") or "bench-exp"

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0

request = function()
  counter = counter + 1
  if mode == "events" then
    local prefix = run .. "-" .. tid .. "-" .. counter .. "-"
    local lines = {}
    for i = 1, math.floor(batch / 2) do
      local unit = prefix .. i
      lines[#lines + 1] = '{"type":"exposure","key":"x' .. unit .. '","experiment":"' .. experiment ..
        '","unit":"' .. unit .. '","variant":"' .. ((i % 2 == 0) and "control" or "treatment") ..
        '","ts":1700000000000}'
      lines[#lines + 1] = '{"type":"value","key":"v' .. unit .. '","experiment":"' .. experiment ..
        '","unit":"' .. unit .. '","metric":"revenue","value":' .. (i % 7) .. ',"ts":1700000001000}'
    end
    return wrk.format(nil, nil, nil, table.concat(lines, "\n"))
  end
  return wrk.format(nil, nil, nil,
    '{"attributes":{"id":"u-' .. tid .. '-' .. (counter % 100000) .. '","country":"US"}}')
end

-- Back-pressure (events mode only: delay() costs every request a timer, and
-- response() a parse of every answer, which would slow the evaluation rows).
refused = 0
if mode == "events" then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } xb_timespec;
    int clock_gettime(int clock_id, xb_timespec* tp);
  ]]
  local now_ts = ffi.new("xb_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, now_ts)  -- CLOCK_MONOTONIC
    return tonumber(now_ts.tv_sec) * 1000 + math.floor(tonumber(now_ts.tv_nsec) / 1e6)
  end
  local ignore = os.getenv("XB_IGNORE_RETRY_AFTER") == "1"
  local paused_until = 0  -- ms, CLOCK_MONOTONIC: no request before it

  response = function(status, headers, body)
    if status ~= 429 then return end
    refused = refused + 1
    if ignore then return end
    local seconds = tonumber(headers["Retry-After"] or headers["retry-after"] or "") or 1
    paused_until = math.max(paused_until, now_ms() + seconds * 1000)
  end

  delay = function()
    return math.max(0, paused_until - now_ms())
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local refused_total = 0
  for _, thread in ipairs(threads) do refused_total = refused_total + (thread:get("refused") or 0) end
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"refused":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, refused_total, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
