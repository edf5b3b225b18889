#!/usr/bin/env bash
# What `audit.file` costs (issue 14 point 5): escrowing imports (`default` encryptor, Ed25519) against two kps
# (release) on 127.0.0.1 — one with the audit trail in its log only, one with `audit.file` and
# `audit.fail_closed` (each escrow then appends and fdatasyncs an attempt and a success line before it is
# answered; the file's writer thread groups the lines waiting at once into one write and one sync) — at 1
# and 64 connections. Rounds alternate between the two so that both see the same store size and noise; the
# ratio reported is the median of the rounds' ratios. Also checks that the file holds two lines per escrow.
# Needs: cargo, wrk, curl, python3. Knobs: BENCH_DURATION (5s per run), BENCH_ROUNDS (3), BENCH_SKIP_BUILD.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BENCH_DIR=$ROOT/bench
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
temp_dir_and_servers

[ -n "${BENCH_SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release -p kps --bins >/dev/null 2>&1)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

declare -A URL
start() { # name [extra env...]
  local name=$1 port
  shift
  port=$(free_port)
  mkdir -m 700 "$TMP/$name"
  printf '[keygen]\nrsa_pool_size = 0\n' >"$TMP/$name.toml"
  env KPS_LOG=warn KPS_QUOTA_KEY_PAIRS=-1 "$@" \
    "$BIN/kps" serve --config "$TMP/$name.toml" --listen 127.0.0.1:"$port" --data-dir "$TMP/$name/data" \
    >"$TMP/$name.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  URL[$name]=http://127.0.0.1:$port
}
start log
start file KPS_AUDIT_FILE="$TMP/audit.jsonl" KPS_AUDIT_FAIL_CLOSED=true

declare -A RPS P50 REQS
run() { # server tag conns
  local out
  out=$(BENCH_KEY=ed25519 BENCH_TOKEN="u-$2:p-bench" BENCH_TAG="$2c$3" BENCH_ENCRYPTION='{"type": "default"}' \
    wrk -t1 -c"$3" -d"$DURATION" -s "$BENCH_DIR/lua/import_escrow.lua" "${URL[$1]}" | grep '^RESULT')
  echo "$2 c=$3: $out"
  [[ $out == *"non2xx=0"* ]] || { echo "errors in $2 c=$3" >&2; exit 1; }
  RPS[$2$3]=$(sed -E 's/.* rps=([0-9.]+).*/\1/' <<<"$out")
  P50[$2$3]=$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$out")
  REQS[$2$3]=$(sed -E 's/.*RESULT requests=([0-9]+).*/\1/' <<<"$out")
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr), $(df -T "$TMP" | awk 'NR==2 {print $2}') temp dir, git $(git -C "$ROOT" rev-parse --short HEAD), $(date -u +%FT%TZ)"
LINES=()
escrows=0
for conns in 1 64; do
  for round in $(seq "$ROUNDS"); do
    run log "log-r$round" "$conns"
    run file "file-r$round" "$conns"
    escrows=$((escrows + REQS[file-r$round$conns]))
    LINES+=("$conns ${RPS[log-r$round$conns]} ${RPS[file-r$round$conns]} ${P50[log-r$round$conns]} ${P50[file-r$round$conns]}")
  done
done
lines=$(wc -l <"$TMP/audit.jsonl")
echo "audit.file: $lines lines for $escrows escrows answered (wrk counts the answers it read: a run's last requests may be answered after it stopped)"
python3 - "${LINES[@]}" <<'PY'
import statistics, sys
by_conns = {}
for row in sys.argv[1:]:
    conns, log_rps, file_rps, log_p50, file_p50 = row.split()
    by_conns.setdefault(conns, []).append((float(log_rps), float(file_rps), float(log_p50), float(file_p50)))
for conns, runs in by_conns.items():
    ratios = [file / log for log, file, _, _ in runs]
    print(f"{conns} conn(s): log-only/audit.file req/s per round "
          + ", ".join(f"{log:.0f}/{file:.0f}" for log, file, _, _ in runs)
          + f"; audit.file keeps a median {statistics.median(ratios) * 100:.0f} % of the log-only rate; "
          + f"p50 {statistics.median(l for _, _, l, _ in runs) / 1000:.2f} ms vs {statistics.median(f for _, _, _, f in runs) / 1000:.2f} ms")
PY
