-- wrk script for scripts/bench-http: the latest config, as a device polls it (no sink involved:
-- one token check and one read of the latest config per request).
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
