-- GET one path over and over. Environment: BENCH_DIR, BENCH_PATH, optional BENCH_TOKEN (X-Auth-Token)
-- and BENCH_API_VERSION (sent as `OpenStack-API-Version: compute <v>`).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH") or "/"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then wrk.headers["X-Auth-Token"] = token end
local version = os.getenv("BENCH_API_VERSION")
if version and version ~= "" then wrk.headers["OpenStack-API-Version"] = "compute " .. version end
