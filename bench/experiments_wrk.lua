-- wrk script for bench/experiments.sh. XB_MODE picks the request:
--   evaluate  POST /v1/evaluate   {"attributes":{"id":UNIT,"country":"US"}}
--   gbeval    POST /api/eval/KEY  the same body (GrowthBook remote evaluation)
--   events    POST /v1/events     XB_BATCH events per request (half exposures,
--             half value events of the same units), every idempotency key
--             unique: XB_RUN (one per wrk run) .. thread id .. request counter.
-- XB_UNITS (events mode): the units are drawn from a space of that many,
-- in order ("u0", "u1", ... then again from "u0"; the variant is the unit
-- number's parity), so the distinct units grow to XB_UNITS and then come
-- back, each after all the others (the unit cache's worst order); unset,
-- every unit is new. Evaluations: units cycle over 100,000 per thread. At the end prints one JSON line
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
local unit_space = tonumber(os.getenv("XB_UNITS") or "0")

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
    local half = math.floor(batch / 2)
    for i = 1, half do
      local key = prefix .. i
      local unit, parity = key, i % 2
      if unit_space > 0 then
        local n = ((counter - 1) * half + i - 1) % unit_space
        unit, parity = "u" .. n, n % 2
      end
      lines[#lines + 1] = '{"type":"exposure","key":"x' .. key .. '","experiment":"' .. experiment ..
        '","unit":"' .. unit .. '","variant":"' .. ((parity == 0) and "control" or "treatment") ..
        '","ts":1700000000000}'
      lines[#lines + 1] = '{"type":"value","key":"v' .. key .. '","experiment":"' .. experiment ..
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
