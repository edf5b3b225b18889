#!/usr/bin/env bash
# Custody benchmarks (issue 5): import with `default` escrow vs plain import (target: within 1.1x), and
# import with `kms` escrow against kms-mock: the added latency and the KMS calls per request (target:
# exactly one data-key call per seal once the alias cache is warm; reads make no KMS call).
# One kps (release) with a KMS configured serves all three variants in the same run, on 127.0.0.1.
# Needs: cargo, wrk, curl, python3. Knobs: BENCH_DURATION (8s), BENCH_SKIP_BUILD.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BENCH_DIR=$ROOT/bench
DURATION=${BENCH_DURATION:-8s}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[ -n "${BENCH_SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --bin kps --bin kms-mock >/dev/null 2>&1)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

export KMS_MOCK_AK=HPUAEXAMPLEAK0000001 KMS_MOCK_SK=ExampleSecretKey0000000000000000000000001
KMS_PORT=$(free_port)
"$BIN/kms-mock" --listen 127.0.0.1:$KMS_PORT --key kps-escrow >"$TMP/kms.log" 2>&1 & PIDS+=($!)
KPS_PORT=$(free_port)
mkdir -m 700 "$TMP/data"
KPS_LOG=warn KPS_QUOTA_KEY_PAIRS=-1 KPS_KMS_PROVIDER=huawei KPS_KMS_ENDPOINT=http://127.0.0.1:$KMS_PORT \
  KPS_KMS_REGION=local KPS_KMS_PROJECT_ID=0a1b2c3d4e5f60718293a4b5c6d7e8f9 \
  KPS_KMS_AK=$KMS_MOCK_AK KPS_KMS_SK=$KMS_MOCK_SK \
  "$BIN/kps" serve --listen 127.0.0.1:$KPS_PORT --data-dir "$TMP/data" >"$TMP/kps.log" 2>&1 & PIDS+=($!)
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

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr), git $(git -C "$ROOT" rev-parse --short HEAD), $(date -u +%FT%TZ)"
for conns in 1 64; do
  run plain $conns ""
  run default $conns '{"type": "default"}'
  # Warm the alias cache, then count data-key calls over the measured run.
  curl -s -o /dev/null -X POST "$URL/v2.1/os-keypairs" -H "X-Auth-Token: u-warm:p-bench" -H 'Content-Type: application/json' \
    -d "{\"keypair\": {\"name\": \"warm$conns\"}}"
  before=$(calls create-datakey); lists=$(calls list-keys)
  run kms $conns '{"type": "kms", "kms_key_name": "kps-escrow"}'
  after=$(calls create-datakey)
  echo "kms c=$conns: create-datakey calls $((after - before)) for ${REQS[kms$conns]} escrows; list-keys calls during the run: $(( $(calls list-keys) - lists ))"
done
# The same comparison for RSA-2048 key pairs (PKCS#1 private key): another match check, a larger record.
for conns in 1 64; do
  run rsa-plain $conns "" rsa
  run rsa-default $conns '{"type": "default"}' rsa
done
reads_before=$(( $(calls create-datakey) + $(calls decrypt-datakey) + $(calls list-keys) + $(calls describe-key) ))
for i in $(seq 200); do curl -s -o /dev/null "$URL/v2.1/os-keypairs?limit=50" -H "X-Auth-Token: u-kms:p-bench" -H 'OpenStack-API-Version: compute 2.35'; done
for i in $(seq 200); do curl -s -o /dev/null "$URL/v3/p-bench/keypairs/kmsc1-1-$i" -H "X-Auth-Token: u-kms:p-bench"; done
reads_after=$(( $(calls create-datakey) + $(calls decrypt-datakey) + $(calls list-keys) + $(calls describe-key) ))
echo "reads: 400 list/show requests made $((reads_after - reads_before)) KMS calls"
python3 - "${RPS[plain64]}" "${RPS[default64]}" "${RPS[plain1]}" "${RPS[default1]}" "${P50[plain1]}" "${P50[kms1]}" "${P50[default1]}" \
  "${RPS[rsa-plain64]}" "${RPS[rsa-default64]}" "${RPS[rsa-plain1]}" "${RPS[rsa-default1]}" <<'PY'
import sys
p64, d64, p1, d1, pp50, kp50, dp50, rp64, rd64, rp1, rd1 = map(float, sys.argv[1:])
for key, plain, escrow, plain1, escrow1 in (("Ed25519", p64, d64, p1, d1), ("RSA-2048", rp64, rd64, rp1, rd1)):
    ratio = plain / escrow
    print(f"{key}: default escrow vs plain import at 64 conns: {escrow:.0f} vs {plain:.0f} req/s -> plain/escrow = "
          f"{ratio:.2f}x (target <= 1.1x): {'PASS' if ratio <= 1.1 else 'FAIL'}; "
          f"at 1 conn: {escrow1:.0f} vs {plain1:.0f} req/s -> {plain1 / escrow1:.2f}x")
print(f"kms escrow p50 at 1 conn: {kp50 / 1000:.2f} ms vs plain {pp50 / 1000:.2f} ms (added {(kp50 - pp50) / 1000:.2f} ms), "
      f"default escrow {dp50 / 1000:.2f} ms")
PY
