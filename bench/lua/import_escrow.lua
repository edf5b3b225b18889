-- POST imports that escrow the private key (key_protection) of the nova-keypairs.md §6.1 test vector, under
-- unique names. Environment as import.lua, plus BENCH_ENCRYPTION: the JSON of key_protection.encryption
-- (e.g. {"type": "default"}); unset = a plain import without key_protection, for the same-run baseline.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

-- BENCH_KEY picks the key pair: `ed25519` (default; the test vector of kps-v3.md §4.6, OpenSSH private key)
-- or `rsa` (RSA-2048, PKCS#1 PEM private key; the kps test fixture). Private keys come from fixture files and
-- are JSON-escaped.
local fixtures = os.getenv("BENCH_DIR") .. "/fixtures/"
local keys = {
  ed25519 = {
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 bench",
    private = "ed25519_vector_openssh.key",
  },
  rsa = { public_file = "rsa2048.pub", private = "rsa2048_pkcs1.pem" },
}
local key = keys[os.getenv("BENCH_KEY") or "ed25519"]
local public_key = key.public or io.open(fixtures .. key.public_file):read("*l")
local fixture = io.open(fixtures .. key.private):read("*a")
local private_key = fixture:gsub("\n", "\\n")
local encryption = os.getenv("BENCH_ENCRYPTION")
local path = os.getenv("BENCH_PATH") or "/v2.1/os-keypairs"
local tag = (os.getenv("BENCH_TAG") or "esc") .. (os.getenv("BENCH_PHASE") or "")
local headers = bench_headers({["Content-Type"] = "application/json"})

local counter = 0
function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d", tag, tid or 0, counter)
  local protection = ""
  if encryption and encryption ~= "" then
    protection = ', "key_protection": {"private_key": "' .. private_key .. '", "encryption": ' .. encryption .. '}'
  end
  local body = '{"keypair": {"name": "' .. name .. '", "public_key": "' .. public_key .. '"' .. protection .. '}}'
  return wrk.format("POST", path, headers, body)
end
