#!/usr/bin/env bash
# kps storage benchmarks, issue 4 (see BENCHMARKS.md "Storage (issue 4)"). Two targets, each measured in
# this one run on this machine:
#
# 1. List page latency does not grow with the store: GET /v2.1/os-keypairs?limit=50&marker=<name> at
#    1 connection, p50 with BENCH_BIG (1,000,000) key pairs of one user within 1.2x of the p50 with
#    BENCH_SMALL (1,000), for the first page and markers at the start, middle and end of the names and
#    uniformly random markers. Both stores are seeded with `kps backup import` of a generated backup
#    (bench/store/gen_backup.py) into fresh 0700 data directories; import time is reported.
# 2. Durable import throughput: kps POST /v2.1/os-keypairs at 64 connections (wrk, bench/lua/import.lua)
#    reaches at least 50 % of the records/s sled 0.34 itself makes durable with batched commits of 64
#    records of the same size (examples/sled_batch.rs, run before and after kps; their mean is the baseline).
#
# Raw output goes to bench/out/store-<UTC timestamp>/ (bench/out/store-latest points at it); servers and
# temporary directories (the 1M-record data directory is ~1 GB) are removed at the end.
#
# Needs: cargo, wrk, python3 (standard library only).
# Knobs (environment): BENCH_BIG (1000000), BENCH_SMALL (1000), BENCH_LIST_REQUESTS (2000 per run),
# BENCH_LIST_ROUNDS (5), BENCH_LIST_SECONDS (2, the wrk -d cap of one list run), BENCH_DURATION (10s),
# BENCH_WARMUP (2s), BENCH_SLED_SECONDS (10), BENCH_WRK_THREADS_64 (2), BENCH_TMP (/tmp),
# BENCH_SKIP_BUILD (unset), BENCH_OUT (bench/out).
# Exit status: 0 when both targets pass, 1 when one fails, 2 on a setup error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/bench
export BENCH_DIR
BIG=${BENCH_BIG:-1000000}
SMALL=${BENCH_SMALL:-1000}
LIST_REQUESTS=${BENCH_LIST_REQUESTS:-2000}
LIST_ROUNDS=${BENCH_LIST_ROUNDS:-5}
LIST_SECONDS=${BENCH_LIST_SECONDS:-2}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
SLED_SECONDS=${BENCH_SLED_SECONDS:-10}
WRK_THREADS_64=${BENCH_WRK_THREADS_64:-2}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-$BENCH_DIR/out}/store-$STAMP
RESULTS=$OUT/results.jsonl
PY="python3 $BENCH_DIR/kpsbench.py"
SB="python3 $BENCH_DIR/store/storebench.py"

TOKEN_LIST=u-big:p-bench
TOKEN_IMPORT=u-bench-import:p-bench-import

for tool in cargo wrk python3; do
  command -v "$tool" >/dev/null || { echo "store.sh: $tool not found (wrk: apt-get install -y wrk)" >&2; exit 2; }
done
((SMALL >= 102 && BIG >= SMALL)) || { echo "store.sh: need 102 <= BENCH_SMALL <= BENCH_BIG" >&2; exit 2; }

mkdir -p "$OUT"
ln -sfn "store-$STAMP" "$(dirname "$OUT")/store-latest"
TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/kps-store-bench.XXXXXX")
chmod 700 "$TMP"
PIDS=()
STARTED=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

stop_server() { # PID
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
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
  log "building: cargo build --release --bin kps --examples"
  cargo build --release --bin kps --examples >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log" >&2; exit 2; }
fi
KPS=$ROOT/target/release/kps
SLED_BATCH=$ROOT/target/release/examples/sled_batch
for bin in "$KPS" "$SLED_BATCH"; do
  [[ -x $bin ]] || { echo "store.sh: $bin was not built" >&2; exit 2; }
done

# --- machine ----------------------------------------------------------------------------------------
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: bench/store.sh$(env | grep -E '^BENCH_' | grep -v '^BENCH_DIR=' | sort | sed 's/^/ /' | tr -d '\n')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -sr)"
  echo "data dir filesystem: $(df -T "$TMP" | awk 'NR==2 {print $2 " on " $1}') ($TMP)"
  echo "rustc: $(rustc --version)"
  echo "wrk: $(wrk --version 2>&1 | head -1)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' (src dirty)')"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

start_kps() { # NAME DATA_DIR -> sets KPS_PID, KPS_URL. No RSA pool: nothing may use CPU in the background.
  # No list page cache either: these runs measure the store (a repeated marker would be a cache hit, and
  # the small store repeats markers far more often than the big one).
  local name=$1 data=$2 port
  port=$($PY free-port)
  printf '[keygen]\nrsa_pool_size = 0\n[cache]\nlist_pages_mb = 0\n' >"$TMP/$name.toml"
  KPS_LOG=warn KPS_QUOTA_KEY_PAIRS=-1 "$KPS" serve --config "$TMP/$name.toml" \
    --listen "127.0.0.1:$port" --data-dir "$data" >>"$OUT/$name.server.log" 2>&1 &
  KPS_PID=$!
  PIDS+=("$KPS_PID")
  KPS_URL=http://127.0.0.1:$port
  $PY wait-http "$KPS_URL/healthz" 60 || { cat "$OUT/$name.server.log" >&2; exit 2; }
  log "kps ($name) pid $KPS_PID on $KPS_URL, data $data"
}

now() { date +%s.%N; }

# === 1. list page latency, BENCH_SMALL vs BENCH_BIG key pairs of one user =============================
declare -A URL PID_OF DATA
for n in "$SMALL" "$BIG"; do
  backup=$TMP/backup-$n.jsonl
  DATA[$n]=$TMP/data-$n
  log "generating a backup with $n key pairs of u-big (bench/store/gen_backup.py)"
  t0=$(now)
  gen=$(python3 "$BENCH_DIR/store/gen_backup.py" "$backup" "$n" u-big p-bench)
  t1=$(now)
  log "importing it: kps backup import $backup --data-dir ${DATA[$n]}"
  KPS_LOG=warn "$KPS" backup import "$backup" --data-dir "${DATA[$n]}" >"$OUT/import-$n.log" 2>&1 \
    || { cat "$OUT/import-$n.log" >&2; exit 2; }
  t2=$(now)
  rm -f "$backup"
  data_mb=$(du -sm "${DATA[$n]}" | cut -f1)
  python3 - "$gen" "$n" "$t0" "$t1" "$t2" "$data_mb" >>"$RESULTS" <<'EOF'
import json, sys
g = json.loads(sys.argv[1]); t0, t1, t2 = map(float, sys.argv[3:6])
print(json.dumps({"kind": "import-cli", "store": sys.argv[2], "keypairs": g["keypairs"], "lines": g["lines"],
                  "bytes": g["bytes"], "gen_s": t1 - t0, "import_s": t2 - t1, "data_mb": int(sys.argv[6])}))
EOF
  log "$(cat "$OUT/import-$n.log"): $(tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("import %.1f s, data dir %d MB" % (r["import_s"], r["data_mb"]))')"
  start_kps "list-$n" "${DATA[$n]}"
  URL[$n]=$KPS_URL PID_OF[$n]=$KPS_PID
done

# Marker positions per store: (none) = first page; start / middle / end = a full page of 50 follows.
marker_for() { # N POSITION
  local n=$1
  case $2 in
    first) echo "" ;;
    start) printf 'k%07d' 1 ;;
    middle) printf 'k%07d' $((n / 2)) ;;
    end) printf 'k%07d' $((n - 51)) ;;
  esac
}

log "checking one page per position on each store"
for n in "$SMALL" "$BIG"; do
  for pos in first start middle end; do
    m=$(marker_for "$n" "$pos")
    if [[ -z $m ]]; then first=k0000000; else first=$(printf 'k%07d' $((10#${m#k} + 1))); fi
    $SB check-page "${URL[$n]}" "$TOKEN_LIST" "$m" "$first" 50 | tee -a "$OUT/run.log" >&2 || exit 2
  done
done

list_run() { # N POSITION ROUND WARMUP(true|false)
  local n=$1 pos=$2 round=$3 warm=$4 raw m seed=$((1000 + $3))
  raw=$OUT/list-$pos-$n-r$round.txt
  if [[ $warm == true ]]; then raw=$OUT/list-$pos-$n-warmup.txt seed=7; fi
  m=$(marker_for "$n" "$pos")
  if [[ $pos == random ]]; then
    BENCH_TOKEN=$TOKEN_LIST BENCH_API_VERSION=2.35 BENCH_RANDOM_N=$n BENCH_SEED=$seed BENCH_REQUESTS=$LIST_REQUESTS \
      wrk -t1 -c1 -d"${LIST_SECONDS}s" --timeout 10s --latency -s "$BENCH_DIR/store/list_pages.lua" "${URL[$n]}" >"$raw" 2>&1
  else
    BENCH_TOKEN=$TOKEN_LIST BENCH_API_VERSION=2.35 BENCH_MARKERS=$m BENCH_REQUESTS=$LIST_REQUESTS \
      wrk -t1 -c1 -d"${LIST_SECONDS}s" --timeout 10s --latency -s "$BENCH_DIR/store/list_pages.lua" "${URL[$n]}" >"$raw" 2>&1
  fi
  $SB wrk list "$raw" store="$n" position="$pos" round="$round" warmup="$warm" marker_big="$(marker_for "$BIG" "$pos")" \
    >>"$RESULTS"
  log "list $pos n=$n round $round$([[ $warm == true ]] && echo ' (warm-up)'): $(grep '^RESULT' "$raw" | cut -d' ' -f2,5-9)"
}

# Steady state: a long-running server has read its pages since it started; a fresh one reads each page from
# disk on first touch (which the 1M store does for nearly every random marker of the measured rounds). So
# each store is first walked once, page by page (limit=1000), then warmed up with random pages (reported,
# not in the target).
for n in "$SMALL" "$BIG"; do
  log "list-$n: $($SB walk "${URL[$n]}" "$TOKEN_LIST" "$n")"
done
for n in "$SMALL" "$BIG"; do list_run "$n" random 0 true; done
for n in "$SMALL" "$BIG"; do for pos in first start middle end; do list_run "$n" "$pos" 0 true; done; done
# Measured: rounds interleave the two stores per position, so that background load hits both alike.
for round in $(seq "$LIST_ROUNDS"); do
  for pos in first start middle end random; do
    for n in "$SMALL" "$BIG"; do list_run "$n" "$pos" "$round" false; done
  done
done
for n in "$SMALL" "$BIG"; do
  echo "rss_kb list-$n: $(awk '/VmRSS/ {print $2}' "/proc/${PID_OF[$n]}/status")" >>"$OUT/machine.txt"
  stop_server "${PID_OF[$n]}"
  rm -rf "${DATA[$n]}"
done

# === 2. durable import throughput: sled batched vs kps at 64 connections ==============================
sled_run() { # MODE WHEN
  local raw=$OUT/sled_batch-$1-$2.txt
  log "sled_batch --mode $1 --batch 64 --seconds $SLED_SECONDS ($2)"
  "$SLED_BATCH" --mode "$1" --batch 64 --seconds "$SLED_SECONDS" --dir "$TMP" >"$raw" 2>&1 || { cat "$raw" >&2; exit 2; }
  $SB sled "$raw" when="$2" >>"$RESULTS"
  log "  $(grep records_per_s "$raw") ($(grep apply_s "$raw"))"
}

sled_run batch before
start_kps import-c64 "$TMP/data-import"
run_import() { # PHASE(w|m) DURATION
  local raw=$OUT/wrk-import-c64-$1.txt
  BENCH_PATH=/v2.1/os-keypairs BENCH_TOKEN=$TOKEN_IMPORT BENCH_TAG=imp BENCH_PHASE=$1 \
    wrk -t"$WRK_THREADS_64" -c64 -d"$2" --timeout 30s --latency -s "$BENCH_DIR/lua/import.lua" "$KPS_URL" >"$raw" 2>&1
  $SB wrk import "$raw" conns=64 warmup="$([[ $1 == w ]] && echo true || echo false)" >>"$RESULTS"
  log "kps import c=64 ($([[ $1 == w ]] && echo warm-up || echo measured)): $(grep '^RESULT' "$raw" | cut -d' ' -f2-)"
}
run_import w "$WARMUP"
cpu0=$(awk '{print $14 + $15}' "/proc/$KPS_PID/stat")
# Syscall counts of kps during the measured run (group size = requests per fdatasync), when perf can count
# tracepoints here; counting adds little overhead.
PERF_EVENTS=syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,syscalls:sys_enter_sync_file_range,context-switches,task-clock
if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_fdatasync true >/dev/null 2>&1; then
  perf stat -e "$PERF_EVENTS" -p "$KPS_PID" -o "$OUT/perf-stat-import-c64.txt" -- sleep "${DURATION%s}" &
  PERF_PID=$!
else
  PERF_PID=
fi
run_import m "$DURATION"
[[ -n $PERF_PID ]] && wait "$PERF_PID" 2>/dev/null || true
cpu1=$(awk '{print $14 + $15}' "/proc/$KPS_PID/stat")
echo "kps cpu during the measured import: $(((cpu1 - cpu0) * 1000 / $(getconf CLK_TCK))) ms" >>"$OUT/machine.txt"
$PY wait-http "$KPS_URL/healthz" 5 || log "!! kps no longer answers /healthz after the import run"
stop_server "$KPS_PID"
rm -rf "$TMP/data-import"
sled_run batch after
# Diagnosis, not in the target: kps's transaction shape, one per record (as kps commits today) and one per
# round (the whole group in one transaction).
sled_run kps-tx info
sled_run kps-group info
# What sled makes durable per second of the writes one import makes (record + name-index entry, with the
# committer's precondition reads), in kps's one-tree layout: the store's share of an import.
sled_run import-writes info

echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "elapsed_s: $(($(date +%s) - STARTED))" >>"$OUT/machine.txt"

# --- report -----------------------------------------------------------------------------------------
status=0
$SB report "$RESULTS" >"$OUT/summary.md" || status=1
cat "$OUT/summary.md"
echo
echo "machine: $(tr '\n' ';' <"$OUT/machine.txt" | sed 's/;/; /g')"
echo "raw output: $OUT"
exit $status
