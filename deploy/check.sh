#!/usr/bin/env bash
# Checks the deployment files that no cargo test covers: the compose files (docker compose config), the
# balancer config (haproxy -c), the image (docker build, only where a Docker engine answers) and the systemd
# unit (systemd-analyze verify). Each check is skipped, with a message, where its tool is missing.
# Usage: deploy/check.sh [path of the kps binary for ExecStart; default target/debug/kps]
set -euo pipefail
cd "$(dirname "$0")/.."
kps_binary="${1:-${CARGO_TARGET_DIR:-target}/debug/kps}"

# The YAML structure each compose file must have, checked where docker compose is missing (the anchors and
# merge keys of compose.replicas.yaml are resolved by the YAML parser, as compose resolves them).
check_compose_yaml() { # FILE
  python3 - "$1" <<'PY'
import sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
services = doc["services"]
if path.endswith("compose.yaml"):
    assert {"kps", "kms-mock"} <= set(services), services.keys()
    env = services["kps"]["environment"]
    assert env["KPS_KMS_PROVIDER"] == "huawei" and env["KPS_KMS_ENDPOINT"].startswith("http://kms-mock:"), env
else:
    assert {"postgres", "kps-1", "kps-2", "balancer", "kms-mock", "keyring-init"} <= set(services), services.keys()
    for name in ("kps-1", "kps-2"):
        env = services[name]["environment"]
        assert env["KPS_STORE_BACKEND"] == "postgres", (name, env)
        assert env["KPS_STORE_POSTGRES_URL"].startswith("postgresql://") and "@postgres:5432/" in env["KPS_STORE_POSTGRES_URL"], env
        assert env["KPS_MASTER_KEY_FILE"] == services["kps-1"]["environment"]["KPS_MASTER_KEY_FILE"], "one keyring for all"
        assert env["KPS_ADMIN_LISTEN"].endswith(":9090") and env["KPS_KMS_ENDPOINT"].startswith("http://kms-mock:"), env
    cfg = open("deploy/haproxy.cfg").read()
    assert "option httpchk GET /readyz" in cfg and "check port 9090" in cfg, "the balancer routes on /readyz"
    assert "server kps-1 kps-1:8774" in cfg and "server kps-2 kps-2:8774" in cfg, "both replicas behind it"
PY
}

for compose in deploy/compose.yaml deploy/compose.replicas.yaml; do
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$compose" config --quiet
    echo "$compose: docker compose config OK"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f "$compose" config --quiet
    echo "$compose: docker-compose config OK"
  elif python3 -c 'import yaml' >/dev/null 2>&1; then
    check_compose_yaml "$compose"
    echo "$compose: docker compose not available, skipped 'docker compose config' (YAML structure OK)"
  else
    echo "$compose: docker compose not available, skipped"
  fi
done

if command -v haproxy >/dev/null 2>&1; then
  # The service names resolve only inside compose's network: check the syntax with them mapped to loopback.
  haproxy_dir="$(mktemp -d)"
  sed 's/ kps-[12]:8774/ 127.0.0.1:8774/' deploy/haproxy.cfg >"$haproxy_dir/haproxy.cfg"
  haproxy -c -q -f "$haproxy_dir/haproxy.cfg"
  rm -rf "$haproxy_dir"
  echo "deploy/haproxy.cfg: haproxy -c OK"
else
  echo "deploy/haproxy.cfg: haproxy not available, skipped 'haproxy -c'"
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
