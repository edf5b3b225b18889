#!/usr/bin/env bash
# kps HTTP benchmarks (see BENCHMARKS.md): builds the release binary and examples, starts kps and the
# trivial axum baseline on free 127.0.0.1 ports, seeds data, runs wrk (show, list 50, import) and a
# Python client (RSA-2048 create, fixed request counts), times `openssl genpkey`, prints a results table
# with the ratio / latency targets and PASS/FAIL, writes everything raw under bench/out/<timestamp>/,
# and stops the servers it started.
#
# Needs: cargo, wrk (apt-get install -y wrk), python3 (standard library only), openssl.
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_CREATES (50), BENCH_CREATES_64 (128),
# BENCH_OPENSSL_RUNS (50), BENCH_RSA_RUNS (20), BENCH_SEED_KEYS (60), BENCH_WRK_THREADS_64 (2),
# BENCH_SKIP_BUILD (unset), BENCH_OUT (bench/out).
# Exit status: 0 when every target passes, 1 when one fails, 2 on a setup error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/bench
export BENCH_DIR
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
CREATES=${BENCH_CREATES:-50}
CREATES_64=${BENCH_CREATES_64:-128}
OPENSSL_RUNS=${BENCH_OPENSSL_RUNS:-50}
RSA_RUNS=${BENCH_RSA_RUNS:-20}
SEED_KEYS=${BENCH_SEED_KEYS:-60}
WRK_THREADS_64=${BENCH_WRK_THREADS_64:-2}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-$BENCH_DIR/out}/$STAMP
RESULTS=$OUT/results.jsonl
PY="python3 $BENCH_DIR/kpsbench.py"

# Tokens (noauth: user:project). One user per workload, so imports and creates never change the list page.
TOKEN_READ=u-bench:p-bench
TOKEN_IMPORT=u-bench-import:p-bench-import
TOKEN_CREATE=u-bench-create:p-bench-create

for tool in cargo wrk python3 openssl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (wrk: apt-get install -y wrk)" >&2; exit 2; }
done

mkdir -p "$OUT"
ln -sfn "$STAMP" "$(dirname "$OUT")/latest"
TMP=$(mktemp -d /tmp/kps-bench.XXXXXX)
PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

stop_server() { # PID
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  for pid in "${PIDS[@]}"; do stop_server "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# --- build ------------------------------------------------------------------------------------------
cd "$ROOT"
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  # `--examples` alone would build only the examples, not the kps binary.
  log "building: cargo build --release --bin kps --examples"
  cargo build --release --bin kps --examples >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log" >&2; exit 2; }
fi
KPS=$ROOT/target/release/kps
TRIVIAL=$ROOT/target/release/examples/trivial_axum
RSA_TIMING=$ROOT/target/release/examples/rsa_keygen_timing
for bin in "$KPS" "$TRIVIAL" "$RSA_TIMING"; do
  [[ -x $bin ]] || { echo "run.sh: $bin was not built" >&2; exit 2; }
done

# --- machine ----------------------------------------------------------------------------------------
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -sr)"
  echo "data dir filesystem: $(df -T /tmp | awk 'NR==2 {print $2}') (/tmp)"
  echo "rustc: $(rustc --version)"
  echo "wrk: $(wrk --version 2>&1 | head -1)"
  echo "python: $(python3 --version)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' (src dirty)')"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk threads: 1 at 1 connection, $WRK_THREADS_64 at 64 connections; durations: warm-up $WARMUP, measured $DURATION"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --- RSA keygen reference points (nothing else of ours running) -----------------------------------------
log "openssl genpkey RSA-2048 x $OPENSSL_RUNS"
$PY openssl "$OPENSSL_RUNS" >"$OUT/openssl.json"
cat "$OUT/openssl.json" >>"$RESULTS"
log "rsa 0.9 RsaPrivateKey::new(2048) x $RSA_RUNS (examples/rsa_keygen_timing)"
"$RSA_TIMING" "$RSA_RUNS" 2048 >"$OUT/rsa_keygen_timing.txt"
$PY rsa-result "$OUT/rsa_keygen_timing.txt" >>"$RESULTS"

# --- servers ----------------------------------------------------------------------------------------
start_kps() { # NAME POOL_SIZE [DATA_DIR] -> sets KPS_PID, KPS_URL
  local name=$1 pool=$2 data=${3:-$TMP/$1-data} port
  port=$($PY free-port)
  printf '[keygen]\nrsa_pool_size = %s\n' "$pool" >"$TMP/$name.toml"
  KPS_LOG=warn KPS_QUOTA_KEY_PAIRS=-1 "$KPS" serve --config "$TMP/$name.toml" \
    --listen "127.0.0.1:$port" --data-dir "$data" >>"$OUT/$name.server.log" 2>&1 &
  KPS_PID=$!
  PIDS+=("$KPS_PID")
  KPS_URL=http://127.0.0.1:$port
  $PY wait-http "$KPS_URL/healthz" 30 || { cat "$OUT/$name.server.log" >&2; exit 2; }
  log "kps ($name, rsa_pool_size=$pool) pid $KPS_PID on $KPS_URL"
}

# After a run against kps: does it still answer /healthz within 5 s? If not, record the hang, kill it
# (a deadlocked kps never finishes its graceful shutdown) and start it again on the same data directory.
HUNG=false
check_kps() { # NAME POOL_SIZE: uses and updates KPS_PID, KPS_URL
  if $PY wait-http "$KPS_URL/healthz" 5 2>/dev/null; then HUNG=false; return; fi
  HUNG=true
  log "!! kps pid $KPS_PID no longer answers /healthz: saving thread stacks, killing it, restarting it"
  if command -v gdb >/dev/null; then
    timeout 60 gdb -p "$KPS_PID" -batch -ex 'thread apply all bt 30' >"$OUT/hang-$1-$(date +%H%M%S).gdb.txt" 2>&1 || true
  fi
  stop_server "$KPS_PID"
  start_kps "$1" "$2" "$TMP/$1-data"
  log "restarted kps: idle after $($PY wait-idle "$KPS_PID" 120) s"
}

start_kps kps-pool16 16
KPS_A_PID=$KPS_PID KPS_A=$KPS_URL

log "seeding $SEED_KEYS Ed25519 keys (list) and one generated RSA key show-rsa (show) for $TOKEN_READ"
SHOW_BYTES=$($PY seed "$KPS_A" "$TOKEN_READ" "$SEED_KEYS" seed)
log "show response body: $SHOW_BYTES bytes"

TRIVIAL_PORT=$($PY free-port)
"$TRIVIAL" "$TRIVIAL_PORT" "$SHOW_BYTES" >"$OUT/trivial.server.log" 2>&1 &
TRIVIAL_PID=$!
PIDS+=("$TRIVIAL_PID")
TRIVIAL_URL=http://127.0.0.1:$TRIVIAL_PORT
$PY wait-http "$TRIVIAL_URL/" 30 || exit 2
log "trivial_axum pid $TRIVIAL_PID on $TRIVIAL_URL ($SHOW_BYTES byte body)"

log "waiting for kps to go idle (RSA pool full)"
log "idle after $($PY wait-idle "$KPS_A_PID" 120) s"

# --- wrk runs ---------------------------------------------------------------------------------------
run_wrk() { # NAME SERVER CONNS URL SCRIPT [env...]
  local name=$1 server=$2 conns=$3 url=$4 script=$5 threads=1 raw
  shift 5
  if ((conns > 1)); then threads=$WRK_THREADS_64; fi
  raw=$OUT/wrk-$name-c$conns.txt
  env "$@" BENCH_PHASE=w wrk -t"$threads" -c"$conns" -d"$WARMUP" --timeout 30s -s "$BENCH_DIR/lua/$script" "$url" \
    >"$OUT/wrk-$name-c$conns.warmup.txt" 2>&1
  env "$@" BENCH_PHASE=m wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 30s --latency \
    -s "$BENCH_DIR/lua/$script" "$url" >"$raw" 2>&1
  HUNG=false
  if [[ $server == kps* ]]; then check_kps kps-pool16 16; fi
  $PY wrk-result "$name" "$server" "$conns" "$raw" "$HUNG" >>"$RESULTS"
  log "$name c=$conns: $(grep '^RESULT' "$raw" | cut -d' ' -f2-)$([[ $HUNG == true ]] && echo ' SERVER HUNG')"
  KPS_A=$KPS_URL KPS_A_PID=$KPS_PID
}

SHOW_PATH=/v2.1/os-keypairs/show-rsa
LIST_PATH="/v2.1/os-keypairs?limit=50"
for conns in 1 64; do
  run_wrk trivial trivial_axum "$conns" "$TRIVIAL_URL" get.lua BENCH_PATH=/
  run_wrk show "kps (default pool)" "$conns" "$KPS_A" get.lua BENCH_PATH="$SHOW_PATH" BENCH_TOKEN="$TOKEN_READ"
  run_wrk list50 "kps (default pool)" "$conns" "$KPS_A" get.lua BENCH_PATH="$LIST_PATH" BENCH_TOKEN="$TOKEN_READ" \
    BENCH_API_VERSION=2.35
  # The same page with a new Host per request: every request misses the list page cache.
  run_wrk list50-uncached "kps (default pool)" "$conns" "$KPS_A" get_uncached.lua BENCH_PATH="$LIST_PATH" \
    BENCH_TOKEN="$TOKEN_READ" BENCH_API_VERSION=2.35
done
# The list page really holds 50 keys.
list_check=$(python3 - "$KPS_A" "$TOKEN_READ" <<'EOF'
import http.client, json, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("GET", "/v2.1/os-keypairs?limit=50", headers={"X-Auth-Token": sys.argv[2], "OpenStack-API-Version": "compute 2.35"})
r = c.getresponse(); body = r.read(); d = json.loads(body)
print(r.status, len(d["keypairs"]), "next" if d.get("keypairs_links") else "-", len(body))
EOF
)
log "list check (status, items, link, bytes): $list_check"

# 4 connections: not a target, but a write figure that does not depend on the hang seen at higher
# concurrency (BENCHMARKS.md).
for conns in 1 4 64; do
  run_wrk import "kps (default pool)" "$conns" "$KPS_A" import.lua BENCH_PATH=/v2.1/os-keypairs \
    BENCH_TOKEN="$TOKEN_IMPORT" BENCH_TAG="imp-c$conns"
done

# --- RSA-2048 creates ---------------------------------------------------------------------------------
run_create() { # NAME SERVER POOL_SIZE CONNS TOTAL: against KPS_URL / KPS_PID
  local name=$1 server=$2 pool=$3 conns=$4 total=$5 waited raw
  raw=$OUT/create-$name-c$conns.json
  waited=$($PY wait-idle "$KPS_PID" 120)
  log "$name c=$conns: server idle after ${waited} s (pool warm if it has one), $total creates"
  $PY create "$KPS_URL" "$TOKEN_CREATE" "$conns" "$total" "cre-$name-c$conns" "$name" "$server" \
    "server idle (pool warm) after ${waited} s" >"$raw" || true
  check_kps "kps-pool$pool" "$pool"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.pop("latencies_ms"); r["hung"]=sys.argv[2]=="true"; print(json.dumps(r))' \
    "$raw" "$HUNG" >>"$RESULTS"
  log "$name c=$conns: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("ok=%(requests)s errors=%(errors)s rps=%(rps)s p50_ms=%(p50_ms)s p99_ms=%(p99_ms)s" % r)' "$raw")$([[ $HUNG == true ]] && echo ' SERVER HUNG')"
}

KPS_URL=$KPS_A KPS_PID=$KPS_A_PID
run_create create-pool16 "kps (default pool, 16)" 16 1 "$CREATES"
run_create create-pool16 "kps (default pool, 16)" 16 64 "$CREATES_64"
stop_server "$KPS_PID"

start_kps kps-pool0 0
run_create create-pool0 "kps (rsa_pool_size = 0)" 0 1 "$CREATES"
run_create create-pool0 "kps (rsa_pool_size = 0)" 0 64 "$CREATES_64"
stop_server "$KPS_PID"
stop_server "$TRIVIAL_PID"

echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# --- report -----------------------------------------------------------------------------------------
$PY report "$RESULTS" | tee "$OUT/summary.md"
echo
echo "raw output: $OUT"
grep -q '^OVERALL: PASS' "$OUT/summary.md"
