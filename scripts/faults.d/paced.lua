-- wrk script for scripts/faults' soak: publishEvent as scripts/bench/publish.lua, each
-- connection waiting DELAY_MS after an answer before its next request (so the rate is about
-- connections × 1000 / (DELAY_MS + latency)).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = '{"binary_data": "eyJ0ZW1wIjogMjEuNX0"}'
local pause = tonumber(os.getenv("DELAY_MS"))
function delay()
  return pause
end
