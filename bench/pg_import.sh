#!/usr/bin/env bash
# Imports against a kps on a local PostgreSQL, outside run.sh (BENCHMARKS.md, "PostgreSQL imports — where the
# time goes"): initdb (fsync and synchronous_commit on), `kps serve` on it, a 2 s warm-up, then
# `wrk -t2 -c$C -d8s bench/lua/import.lua`. USERS=N spreads the imports over N users (USERS= for one user).
# Needs: target/release/kps (cargo build --release -p kps), wrk, PostgreSQL binaries; run as root or postgres.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGB=${BENCH_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
C=${C:-64}; USERS=${USERS-64}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
PG_PORT=$(free_port); KPS_PORT=$(free_port)
R=$(mktemp -d /tmp/kps-pg-import.XXXXXX); chmod 755 "$R"
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ $(id -u) == 0 ]] && chown postgres: "$R"
as_pg "$PGB/initdb" -D "$R/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PGB/pg_ctl" -D "$R/data" -l "$R/log" -w -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT \
  -c unix_socket_directories=$R -c fsync=on -c synchronous_commit=on -c max_connections=200" start >/dev/null
as_pg "$PGB/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres kps
K=$ROOT/target/release/kps
KPS_MASTER_KEY_FILE=$R/master.key "$K" master-key generate --data-dir "$R/unused" >/dev/null
KPS_STORE_BACKEND=postgres KPS_STORE_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PG_PORT/kps \
  KPS_MASTER_KEY_FILE=$R/master.key KPS_QUOTA_KEY_PAIRS=-1 KPS_LOG=warn \
  "$K" serve --listen "127.0.0.1:$KPS_PORT" --data-dir "$R/kps" >"$R/kps.log" 2>&1 &
KP=$!
trap 'kill $KP 2>/dev/null; wait $KP 2>/dev/null; as_pg "$PGB/pg_ctl" -D "$R/data" -m fast -w stop >/dev/null; rm -rf "$R"' EXIT
sleep 2
export BENCH_DIR=$ROOT/bench BENCH_TOKEN=u-pgimp:p-pgimp BENCH_PATH=/v2.1/os-keypairs BENCH_TAG=pgimp BENCH_USERS=$USERS
BENCH_PHASE=w wrk -t2 -c"$C" -d2s -s "$ROOT/bench/lua/import.lua" "http://127.0.0.1:$KPS_PORT" >/dev/null
BENCH_PHASE=m wrk -t2 -c"$C" -d8s --latency -s "$ROOT/bench/lua/import.lua" "http://127.0.0.1:$KPS_PORT" | grep -E "Requests/sec|RESULT"
