#!/usr/bin/env bash
# Checks the deployment files that no cargo test covers: the compose file (docker compose config), the image
# (docker build, only where a Docker engine answers) and the systemd unit (systemd-analyze verify). Each check
# is skipped, with a message, where its tool is missing.
# Usage: deploy/check.sh [path of the kps binary for ExecStart; default target/debug/kps]
set -euo pipefail
cd "$(dirname "$0")/.."
kps_binary="${1:-${CARGO_TARGET_DIR:-target}/debug/kps}"

if docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/compose.yaml config --quiet
  echo "deploy/compose.yaml: docker compose config OK"
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f deploy/compose.yaml config --quiet
  echo "deploy/compose.yaml: docker-compose config OK"
elif python3 -c 'import yaml' >/dev/null 2>&1; then
  python3 - <<'PY'
import yaml
doc = yaml.safe_load(open("deploy/compose.yaml"))
services = doc["services"]
assert {"kps", "kms-mock"} <= set(services), services.keys()
env = services["kps"]["environment"]
assert env["KPS_KMS_PROVIDER"] == "huawei" and env["KPS_KMS_ENDPOINT"].startswith("http://kms-mock:"), env
PY
  echo "deploy/compose.yaml: docker compose not available, skipped 'docker compose config' (YAML structure OK)"
else
  echo "deploy/compose.yaml: docker compose not available, skipped"
fi

if docker info >/dev/null 2>&1; then
  docker build -f deploy/Dockerfile -t kps:check .
  echo "deploy/Dockerfile: docker build OK"
else
  echo "deploy/Dockerfile: no Docker engine answers here, skipped 'docker build'"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
  if [ ! -x "$kps_binary" ]; then
    echo "deploy/kps.service: $kps_binary not built, skipped systemd-analyze verify"
  else
    unit_dir="$(mktemp -d)"
    trap 'rm -rf "$unit_dir"' EXIT
    sed "s#/usr/local/bin/kps#$(realpath "$kps_binary")#" deploy/kps.service >"$unit_dir/kps.service"
    # verify exits 0 on unknown keys and other warnings: any output at all is a failure.
    output="$(systemd-analyze verify "$unit_dir/kps.service" 2>&1)" || { echo "$output" >&2; exit 1; }
    if [ -n "$output" ]; then
      echo "$output" >&2
      exit 1
    fi
    echo "deploy/kps.service: systemd-analyze verify OK"
  fi
else
  echo "deploy/kps.service: systemd-analyze not available, skipped"
fi
