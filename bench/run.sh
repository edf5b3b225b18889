#!/usr/bin/env bash
# kps HTTP benchmarks (see BENCHMARKS.md): builds the release binary and examples, starts kps and the
# trivial axum baseline on free 127.0.0.1 ports, seeds data, runs wrk (show, list 50, import) and a
# Python client (RSA-2048 create, fixed request counts), times `openssl genpkey`, prints a results table
# with the ratio / latency targets and PASS/FAIL, writes everything raw under bench/out/<timestamp>/,
# and stops the servers it started.
#
# With PostgreSQL (BENCH_STORES contains `postgres`) it then starts a local PostgreSQL server of its own
# (initdb into a temp dir, as the `postgres` user when run as root; 127.0.0.1 on a free port; fsync and
# synchronous_commit on, as sled syncs every commit) and a kps on it (`store.backend = "postgres"`), runs the
# same show, list 50 and import workloads against it (named `show-pg`, `list50-pg`, `import-pg`) and reports
# each PostgreSQL figure against sled's (goal: at least 25 %), then stops both.
#
# Needs: cargo, wrk (apt-get install -y wrk), python3 (standard library only), openssl; for postgres the
# server binaries (apt-get install -y postgresql: found in /usr/lib/postgresql/*/bin or on PATH).
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_CREATES (50), BENCH_CREATES_64 (128),
# BENCH_OPENSSL_RUNS (50), BENCH_RSA_RUNS (20), BENCH_SEED_KEYS (60), BENCH_WRK_THREADS_64 (2),
# BENCH_SKIP_BUILD (unset), BENCH_BIN_DIR (target/release; e.g. target/debug with BENCH_SKIP_BUILD=1 for a
# quick smoke run of the script itself, whose figures mean nothing), BENCH_OUT (bench/out),
# BENCH_STORES ("sled postgres" when PostgreSQL's binaries are found, else "sled"; "sled" skips PostgreSQL,
# and naming postgres without its binaries is a setup error), BENCH_PG_BIN (the PostgreSQL bin directory).
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

# PostgreSQL's server binaries: Debian keeps them out of PATH, in /usr/lib/postgresql/<major>/bin.
PG_BIN=${BENCH_PG_BIN:-}
if [[ -z $PG_BIN ]]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -z $PG_BIN ]] && command -v initdb >/dev/null && PG_BIN=$(dirname "$(command -v initdb)")
fi
if [[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]]; then
  STORES=${BENCH_STORES:-sled postgres}
else
  STORES=${BENCH_STORES:-sled}
  if [[ $STORES == *postgres* ]]; then
    echo "run.sh: BENCH_STORES names postgres, but initdb/pg_ctl were not found (apt-get install -y postgresql)" >&2
    exit 2
  fi
fi

mkdir -p "$OUT"
ln -sfn "$STAMP" "$(dirname "$OUT")/latest"
TMP=$(mktemp -d /tmp/kps-bench.XXXXXX)
PIDS=()
PG_ROOT=

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

# Runs a PostgreSQL command as the `postgres` user when we are root (initdb refuses root), else as ourselves.
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A PostgreSQL server of our own in a temp dir, on 127.0.0.1:<free port>, database `kps`: sets PG_URL.
start_postgres() {
  local port
  port=$($PY free-port)
  PG_ROOT=$(mktemp -d /tmp/kps-bench-pg.XXXXXX)
  chmod 0755 "$PG_ROOT"
  [[ $(id -u) == 0 ]] && chown postgres: "$PG_ROOT"
  as_pg "$PG_BIN/initdb" -D "$PG_ROOT/data" -U postgres -A trust -E UTF8 --no-sync >"$OUT/postgres.initdb.log" 2>&1 \
    || { cat "$OUT/postgres.initdb.log" >&2; exit 2; }
  as_pg "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$PG_ROOT -c fsync=on -c synchronous_commit=on -c max_connections=200" \
    start >/dev/null || { cat "$PG_ROOT/server.log" >&2; exit 2; }
  as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres kps || exit 2
  PG_URL=postgresql://postgres@127.0.0.1:$port/kps
  log "postgresql $("$PG_BIN/postgres" --version | awk '{print $NF}') on 127.0.0.1:$port ($PG_ROOT)"
}

stop_postgres() {
  [[ -n $PG_ROOT && -d $PG_ROOT ]] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m fast -w stop >/dev/null 2>&1 || true
  cp "$PG_ROOT/server.log" "$OUT/postgres.server.log" 2>/dev/null || true
  rm -rf "$PG_ROOT"
  PG_ROOT=
}

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
  stop_postgres
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
BIN_DIR=${BENCH_BIN_DIR:-$ROOT/target/release}
KPS=$BIN_DIR/kps
TRIVIAL=$BIN_DIR/examples/trivial_axum
RSA_TIMING=$BIN_DIR/examples/rsa_keygen_timing
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
# The store of the kps servers started next: empty for sled, the KPS_STORE_* / keyring variables for postgres.
KPS_STORE_ENV=()
start_kps() { # NAME POOL_SIZE [DATA_DIR] -> sets KPS_PID, KPS_URL (and KPS_NAME, KPS_POOL for check_kps)
  local name=$1 pool=$2 data=${3:-$TMP/$1-data} port
  KPS_NAME=$name KPS_POOL=$pool
  port=$($PY free-port)
  printf '[keygen]\nrsa_pool_size = %s\n' "$pool" >"$TMP/$name.toml"
  env "${KPS_STORE_ENV[@]}" KPS_LOG=warn KPS_QUOTA_KEY_PAIRS=-1 "$KPS" serve --config "$TMP/$name.toml" \
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
  if [[ $server == kps* ]]; then check_kps "$KPS_NAME" "$KPS_POOL"; fi
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
# The same imports spread over many users (no two in flight write one owner's rows): info, and the
# comparison that shows what PostgreSQL does when writes are not serialized on one owner.
run_wrk import-users "kps (default pool)" 64 "$KPS_A" import.lua BENCH_PATH=/v2.1/os-keypairs \
  BENCH_TOKEN="$TOKEN_IMPORT" BENCH_TAG="impu-c64" BENCH_USERS=64

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

# --- the same workloads on PostgreSQL ----------------------------------------------------------------
if [[ $STORES == *postgres* ]]; then
  start_postgres
  # kps on PostgreSQL never creates a keyring: it is given one, as every replica would be.
  KPS_MASTER_KEY_FILE=$TMP/pg-master.key "$KPS" master-key generate --data-dir "$TMP/pg-keyring-unused" \
    >/dev/null || exit 2
  KPS_STORE_ENV=(KPS_STORE_BACKEND=postgres "KPS_STORE_POSTGRES_URL=$PG_URL" "KPS_MASTER_KEY_FILE=$TMP/pg-master.key")
  start_kps kps-pg 16
  KPS_A=$KPS_URL KPS_A_PID=$KPS_PID
  log "seeding $SEED_KEYS Ed25519 keys and show-rsa on postgres"
  PG_SHOW_BYTES=$($PY seed "$KPS_A" "$TOKEN_READ" "$SEED_KEYS" seed)
  log "show response body on postgres: $PG_SHOW_BYTES bytes (sled: $SHOW_BYTES)"
  log "idle after $($PY wait-idle "$KPS_A_PID" 120) s"
  for conns in 1 64; do
    run_wrk show-pg "kps on postgres" "$conns" "$KPS_A" get.lua BENCH_PATH="$SHOW_PATH" BENCH_TOKEN="$TOKEN_READ"
    run_wrk list50-pg "kps on postgres" "$conns" "$KPS_A" get.lua BENCH_PATH="$LIST_PATH" \
      BENCH_TOKEN="$TOKEN_READ" BENCH_API_VERSION=2.35
    run_wrk list50-uncached-pg "kps on postgres" "$conns" "$KPS_A" get_uncached.lua BENCH_PATH="$LIST_PATH" \
      BENCH_TOKEN="$TOKEN_READ" BENCH_API_VERSION=2.35
  done
  for conns in 1 4 64; do
    run_wrk import-pg "kps on postgres" "$conns" "$KPS_A" import.lua BENCH_PATH=/v2.1/os-keypairs \
      BENCH_TOKEN="$TOKEN_IMPORT" BENCH_TAG="imp-c$conns"
  done
  run_wrk import-users-pg "kps on postgres" 64 "$KPS_A" import.lua BENCH_PATH=/v2.1/os-keypairs \
    BENCH_TOKEN="$TOKEN_IMPORT" BENCH_TAG="impu-c64" BENCH_USERS=64
  stop_server "$KPS_PID"
  stop_postgres
  KPS_STORE_ENV=()
fi

echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# --- report -----------------------------------------------------------------------------------------
$PY report "$RESULTS" | tee "$OUT/summary.md"
echo
echo "raw output: $OUT"
grep -q '^OVERALL: PASS' "$OUT/summary.md"
