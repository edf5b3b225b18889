# Sourced by the bench scripts: what each of them needs to start servers on 127.0.0.1 and leave nothing behind.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A temp dir in $TMP and a list $PIDS of the servers started (append with `PIDS+=($!)`): on exit the servers
# are stopped, waited for, and the temp dir removed.
temp_dir_and_servers() {
  TMP=$(mktemp -d)
  PIDS=()
  trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
}
