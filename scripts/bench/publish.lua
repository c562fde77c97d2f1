-- wrk script for scripts/bench-http: every request is a publishEvent with the same signed token
-- (the token cache makes repeats cheap, as they are for a real device between renewals).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = '{"binary_data": "eyJ0ZW1wIjogMjEuNX0"}'
