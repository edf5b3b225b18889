#!/usr/bin/env bash
# What a real browser does with kps's CORS answers (README "CORS for browser consoles"): headless Chromium
# loads a page from one origin, and its script calls a kps on another with X-Auth-Token and
# OpenStack-API-Version (so the browser sends a preflight first). From the listed origin the create succeeds
# and the script can read the exposed headers and an error answer's body; from an unlisted origin (the same
# page as http://localhost:PORT) the browser refuses the call.
#
# Manual check, not part of .ci/run: needs Debian's `chromium` (skipped with a message where it is missing),
# python3 and a built kps (KPS_BIN, default target/debug/kps). Exit 0 = every expectation held.
set -euo pipefail

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "SKIP: chromium is not installed (apt-get install chromium)"
  exit 0
fi
kps=${KPS_BIN:-target/debug/kps}
[ -x "$kps" ] || { echo "no kps binary at $kps (cargo build, or set KPS_BIN)"; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kps_port=$(free_port)
page_port=$(free_port)
kps_url="http://127.0.0.1:$kps_port"

cat > "$work/index.html" <<HTML
<!doctype html><html><body><pre id="out">running</pre><script>
const kps = "$kps_url";
const headers = {"X-Auth-Token": "u:p", "OpenStack-API-Version": "compute 2.2", "Content-Type": "application/json"};
(async () => {
  const out = [];
  try {
    const body = JSON.stringify({keypair: {name: "browser-" + Date.now(), type: "ssh"}});
    const created = await fetch(kps + "/v2.1/os-keypairs", {method: "POST", headers, body});
    const json = await created.json();
    out.push("create=" + created.status);
    out.push("version=" + created.headers.get("OpenStack-API-Version"));
    out.push("request_id=" + (created.headers.get("X-OpenStack-Request-ID") || "unreadable"));
    out.push("private_key=" + (json.keypair && json.keypair.private_key ? "returned" : "missing"));
    const missing = await fetch(kps + "/v2.1/os-keypairs/no-such-key", {headers});
    out.push("missing=" + missing.status + " " + (await missing.json()).error_code);
  } catch (error) {
    out.push("blocked=" + error.name);
  }
  document.getElementById("out").textContent = out.join("\n");
})();
</script></body></html>
HTML

KPS_CORS_ALLOWED_ORIGINS="http://127.0.0.1:$page_port" KPS_LOG=warn \
  "$kps" serve --listen "127.0.0.1:$kps_port" --data-dir "$work/data" >"$work/kps.log" 2>&1 &
pids+=($!)
python3 -m http.server "$page_port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "$kps_url/healthz" >/dev/null 2>&1 && curl -fs "http://127.0.0.1:$page_port/index.html" >/dev/null 2>&1 && break
  sleep 0.1
done

browse() {
  "$chromium" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$work/profile-$2" \
    --virtual-time-budget=15000 --dump-dom "$1" 2>/dev/null | sed -n '/<pre id="out">/,/<\/pre>/p'
}

failed=0
expect() { # expect LABEL TEXT PATTERN
  if grep -qE "$3" <<<"$2"; then echo "ok   $1: $3"; else echo "FAIL $1: wanted $3 in: $2"; failed=1; fi
}

listed=$(browse "http://127.0.0.1:$page_port/index.html" listed)
expect listed "$listed" 'create=201'
expect listed "$listed" 'version=compute 2\.2'
expect listed "$listed" 'request_id=req-[0-9a-f-]{36}'
expect listed "$listed" 'private_key=returned'
expect listed "$listed" 'missing=404 KPS\.1601'

unlisted=$(browse "http://localhost:$page_port/index.html" unlisted)
expect unlisted "$unlisted" 'blocked=TypeError'

exit "$failed"
