-- GET one path over and over. Environment: BENCH_DIR, BENCH_PATH, optional BENCH_TOKEN (X-Auth-Token)
-- and BENCH_API_VERSION (sent as `OpenStack-API-Version: compute <v>`).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH") or "/"
bench_headers(wrk.headers)
