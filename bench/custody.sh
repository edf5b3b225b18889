#!/usr/bin/env bash
# Custody benchmarks (issue 5): import with `default` escrow vs plain import (target: within 1.1x), and
# import with `kms` escrow against kms-mock: the added latency and the KMS calls per request (target:
# exactly one data-key call per seal once the alias cache is warm; reads make no KMS call).
# One kps (release) with a KMS configured serves all three variants in the same run, on 127.0.0.1.
# kps runs without its RSA key pool (imports never use it; its background key generation would take CPU
# from whichever variant runs first).
# Needs: cargo, wrk, curl, python3. Knobs: BENCH_DURATION (5s per run), BENCH_ROUNDS (3), BENCH_SKIP_BUILD.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BENCH_DIR=$ROOT/bench
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
temp_dir_and_servers

[ -n "${BENCH_SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release -p kps -p kms-mock --bins >/dev/null 2>&1)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

export KMS_MOCK_AK=HPUAEXAMPLEAK0000001 KMS_MOCK_SK=ExampleSecretKey0000000000000000000000001
KMS_PORT=$(free_port)
"$BIN/kms-mock" --listen 127.0.0.1:$KMS_PORT --key kps-escrow >"$TMP/kms.log" 2>&1 & PIDS+=($!)
KPS_PORT=$(free_port)
mkdir -m 700 "$TMP/data"
printf '[keygen]\nrsa_pool_size = 0\n' >"$TMP/kps.toml"
KPS_LOG=warn KPS_QUOTA_KEY_PAIRS=-1 KPS_KMS_PROVIDER=huawei KPS_KMS_ENDPOINT=http://127.0.0.1:$KMS_PORT \
  KPS_KMS_REGION=local KPS_KMS_PROJECT_ID=0a1b2c3d4e5f60718293a4b5c6d7e8f9 \
  KPS_KMS_AK=$KMS_MOCK_AK KPS_KMS_SK=$KMS_MOCK_SK \
  "$BIN/kps" serve --config "$TMP/kps.toml" --listen 127.0.0.1:$KPS_PORT --data-dir "$TMP/data" >"$TMP/kps.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$KPS_PORT/healthz" >/dev/null && break; sleep 0.1; done
URL=http://127.0.0.1:$KPS_PORT
calls() { curl -s "http://127.0.0.1:$KMS_PORT/_mock/calls" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }

declare -A RPS P50 REQS
run() { # variant conns encryption-json [key: ed25519 | rsa]
  local out
  out=$(BENCH_KEY="${4:-ed25519}" BENCH_TOKEN="u-$1:p-bench" BENCH_TAG="$1c$2" BENCH_ENCRYPTION="$3" \
    wrk -t1 -c"$2" -d"$DURATION" -s "$BENCH_DIR/lua/import_escrow.lua" "$URL" | grep '^RESULT')
  echo "$1 c=$2: $out"
  [[ $out == *"non2xx=0"* ]] || { echo "errors in $1 c=$2" >&2; exit 1; }
  RPS[$1$2]=$(sed -E 's/.* rps=([0-9.]+).*/\1/' <<<"$out")
  P50[$1$2]=$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$out")
  REQS[$1$2]=$(sed -E 's/.*RESULT requests=([0-9]+).*/\1/' <<<"$out")
}
# Plain and escrowed imports alternate, ROUNDS times each, so that both see the same store size and the
# same share of this shared machine's noise; the ratio reported is the median of the rounds' ratios.
RATIOS=()
compare() { # key conns
  local key=$1 conns=$2 round ratios=()
  for round in $(seq "$ROUNDS"); do
    run "$key-plain-r$round" "$conns" "" "$key"
    run "$key-default-r$round" "$conns" '{"type": "default"}' "$key"
    ratios+=("${RPS[$key-plain-r$round$conns]}/${RPS[$key-default-r$round$conns]}")
  done
  RATIOS+=("$key $conns ${ratios[*]}")
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr), git $(git -C "$ROOT" rev-parse --short HEAD), $(date -u +%FT%TZ)"
for conns in 1 64; do
  compare ed25519 $conns
  # Warm the alias cache (one generated key escrowed under the alias), then count calls over the measured run.
  curl -sf -o /dev/null -X POST "$URL/v2.1/os-keypairs" -H "X-Auth-Token: u-warm:p-bench" -H 'Content-Type: application/json' \
    -d "{\"keypair\": {\"name\": \"warm$conns\", \"key_protection\": {\"encryption\": {\"type\": \"kms\", \"kms_key_name\": \"kps-escrow\"}}}}"
  before=$(calls create-datakey); lists=$(calls list-keys)
  run kms $conns '{"type": "kms", "kms_key_name": "kps-escrow"}'
  after=$(calls create-datakey)
  echo "kms c=$conns: create-datakey calls $((after - before)) for ${REQS[kms$conns]} escrows; list-keys calls during the run: $(( $(calls list-keys) - lists ))"
done
# The same comparison for RSA-2048 key pairs (PKCS#1 private key): another match check, a larger record.
for conns in 1 64; do
  compare rsa $conns
done
reads_before=$(( $(calls create-datakey) + $(calls decrypt-datakey) + $(calls list-keys) + $(calls describe-key) ))
for i in $(seq 200); do curl -s -o /dev/null "$URL/v2.1/os-keypairs?limit=50" -H "X-Auth-Token: u-kms:p-bench" -H 'OpenStack-API-Version: compute 2.35'; done
for i in $(seq 200); do curl -s -o /dev/null "$URL/v3/p-bench/keypairs/kmsc1-1-$i" -H "X-Auth-Token: u-kms:p-bench"; done
reads_after=$(( $(calls create-datakey) + $(calls decrypt-datakey) + $(calls list-keys) + $(calls describe-key) ))
echo "reads: 400 list/show requests made $((reads_after - reads_before)) KMS calls"
python3 - "${P50[ed25519-plain-r11]}" "${P50[kms1]}" "${P50[ed25519-default-r11]}" "${RATIOS[@]}" <<'PY'
import statistics, sys
pp50, kp50, dp50 = map(float, sys.argv[1:4])
for line in sys.argv[4:]:
    key, conns, *pairs = line.split()
    runs = [tuple(map(float, pair.split("/"))) for pair in pairs]
    ratios = [plain / escrow for plain, escrow in runs]
    median = statistics.median(ratios)
    verdict = f" (target <= 1.1x): {'PASS' if median <= 1.1 else 'FAIL'}" if conns == "64" else ""
    print(f"{key} at {conns} conn(s): plain/escrow req/s per round " + ", ".join(f"{p:.0f}/{e:.0f} = {p / e:.2f}x" for p, e in runs)
          + f"; median {median:.2f}x{verdict}")
print(f"kms escrow p50 at 1 conn: {kp50 / 1000:.2f} ms vs plain {pp50 / 1000:.2f} ms (added {(kp50 - pp50) / 1000:.2f} ms), "
      f"default escrow {dp50 / 1000:.2f} ms")
PY
