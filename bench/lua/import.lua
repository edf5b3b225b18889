-- POST imports of one fixed Ed25519 public key under names unique across threads and runs:
-- <BENCH_TAG><BENCH_PHASE>-<thread>-<counter>. Environment: BENCH_DIR, BENCH_PATH, BENCH_TOKEN, BENCH_TAG,
-- BENCH_PHASE (run.sh sets it so that the warm-up and the measured run never reuse a name).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

-- The test vector of nova-keypairs.md §6.1 (seed 00 01 .. 1f).
local public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 bench"
local path = os.getenv("BENCH_PATH") or "/v2.1/os-keypairs"
local tag = (os.getenv("BENCH_TAG") or "imp") .. (os.getenv("BENCH_PHASE") or "")
local headers = bench_headers({["Content-Type"] = "application/json"})

-- BENCH_USERS = N (optional): spread the imports over N users of the token's project
-- (`<user>-<k>:<project>`), so that no two concurrent requests write the same owner's rows.
local users = tonumber(os.getenv("BENCH_USERS") or "")
local token_user, token_project = string.match(os.getenv("BENCH_TOKEN") or "", "^([^:]+):(.+)$")

local counter = 0
function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d", tag, tid or 0, counter)
  local body = '{"keypair": {"name": "' .. name .. '", "public_key": "' .. public_key .. '"}}'
  if users and token_user then
    headers["X-Auth-Token"] = string.format("%s-%d-%d:%s", token_user, tid or 0, counter % users, token_project)
  end
  return wrk.format("POST", path, headers, body)
end
