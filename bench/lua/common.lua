-- Shared by the wrk scripts of bench/: the request headers every script sends, a number per wrk thread
-- (`tid`, for names unique across threads), and one machine-readable RESULT line at the end of a run.
-- Latency figures are in microseconds; `non2xx` counts responses outside 2xx/3xx.

-- BENCH_TOKEN as X-Auth-Token and BENCH_API_VERSION as `OpenStack-API-Version: compute <v>`, when set,
-- added to `headers` (default: a new table), which is returned.
function bench_headers(headers)
  headers = headers or {}
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then headers["X-Auth-Token"] = token end
  local version = os.getenv("BENCH_API_VERSION")
  if version and version ~= "" then headers["OpenStack-API-Version"] = "compute " .. version end
  return headers
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "connect_err=%d read_err=%d write_err=%d timeout_err=%d non2xx=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
