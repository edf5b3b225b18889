-- bench/store.sh: GET one list page per request at 1 connection, a fixed number of requests, then stop.
-- Environment: BENCH_DIR, BENCH_TOKEN, BENCH_API_VERSION (as bench/lua/get.lua), BENCH_REQUESTS (how many
-- responses to wait for, default 2000), and where the pages start, one of:
--   BENCH_MARKERS   comma-separated marker names, used in turn (an empty entry = the first page, no marker)
--   BENCH_RANDOM_N  N: every request takes a marker k%07d drawn uniformly from k0000000 .. k(N-51), so that
--                   every page is a full page of 50 (names as bench/store/gen_backup.py writes them)
-- BENCH_LIMIT (50). BENCH_SEED (1) seeds the random draws, so both stores see the same sequence shape.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

local limit = os.getenv("BENCH_LIMIT") or "50"
local base = "/v2.1/os-keypairs?limit=" .. limit
local total = tonumber(os.getenv("BENCH_REQUESTS") or "2000")
local random_n = tonumber(os.getenv("BENCH_RANDOM_N") or "")
local markers = {}
for m in ((os.getenv("BENCH_MARKERS") or "") .. ","):gmatch("([^,]*),") do markers[#markers + 1] = m end
if #markers == 0 then markers[1] = "" end

wrk.method = "GET"
bench_headers(wrk.headers)

math.randomseed(tonumber(os.getenv("BENCH_SEED") or "1"))
local sent, received = 0, 0

function request()
  sent = sent + 1
  local marker
  if random_n then
    marker = string.format("k%07d", math.random(0, math.max(0, random_n - 51)))
  else
    marker = markers[(sent - 1) % #markers + 1]
  end
  local path = base
  if marker ~= "" then path = path .. "&marker=" .. marker end
  return wrk.format(nil, path)
end

function response(status, headers, body)
  received = received + 1
  if received >= total then wrk.thread:stop() end
end
