-- GET one path over and over, each request with a different Host header, so that no two requests share a
-- cached list page (the page cache keys on the link base, which comes from Host): the cache-miss path of a
-- list, including rendering and inserting the page. Environment as get.lua.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

local path = os.getenv("BENCH_PATH") or "/"
local headers = bench_headers()

local counter = 0
function request()
  counter = counter + 1
  headers["Host"] = string.format("h%d-%d.bench", tid or 0, counter)
  return wrk.format("GET", path, headers)
end
