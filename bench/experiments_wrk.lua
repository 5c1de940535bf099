-- wrk script for bench/experiments.sh. XB_MODE picks the request:
--   evaluate  POST /v1/evaluate   {"attributes":{"id":UNIT,"country":"US"}}
--   gbeval    POST /api/eval/KEY  the same body (GrowthBook remote evaluation)
--   events    POST /v1/events     XB_BATCH events per request (half exposures,
--             half value events of the same units), every idempotency key
--             unique: XB_RUN (one per wrk run) .. thread id .. request counter.
-- Units cycle over 100,000 per thread. At the end prints one JSON line
-- (prefix "JSON ") with the counts and latency percentiles.
local mode = os.getenv("XB_MODE") or "evaluate"
local batch = tonumber(os.getenv("XB_BATCH") or "1000")
local run = os.getenv("XB_RUN") or tostring(os.time())
local experiment = os.getenv("XB_EXPERIMENT") or "bench-exp"

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
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

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
