"""Fuzz kps's own OpenAPI document with schemathesis (tests/client_compat.rs runs this; see README
"OpenAPI document and its fuzz check").

Starts the kps binary (``KPS_BIN``) on a free 127.0.0.1 port in noauth mode with a fresh 0700 data dir, then
runs ``st run`` against ``/openapi.json`` with ``tests/compat/schemathesis.toml`` (the checks, the
per-operation settings) and ``openapi_fuzz_hooks.py``, a fixed seed and a bound (cases per operation, or a
time budget), prints schemathesis's summary and exits with its exit code (0 = no failure). kps must then
stop on SIGTERM with exit 0.

Usage: python openapi_fuzz.py [--max-examples N | --max-time SECONDS] [--seed N] [--schema FILE]
       [extra `st run` arguments...]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localserver import free_port, healthy

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CONFIG = Path(os.environ.get("KPS_OPENAPI_FUZZ_CONFIG", HERE / "schemathesis.toml"))
STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 30
START_ATTEMPTS = 5


def start_kps(binary: Path, workdir: Path) -> tuple[subprocess.Popen, str, Path]:
    data_dir = workdir / "data"
    data_dir.mkdir(mode=0o700)
    os.chmod(data_dir, 0o700)
    # The server runs on its built-in defaults (noauth): no KPS_* setting of the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPS_")}
    env["KPS_LOG"] = os.environ.get("KPS_LOG", "warn")
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = workdir / f"kps-{attempt}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), "--auth", "noauth"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if healthy(base_url):
                return process, base_url, log_path
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()
            sys.exit(f"kps not healthy after {STARTUP_TIMEOUT_S}s; log:\n{log_path.read_text(errors='replace')}")
        if "in use" not in log_path.read_text(errors="replace"):
            sys.exit(f"kps exited with {process.returncode} at startup; log:\n{log_path.read_text(errors='replace')}")
    sys.exit(f"kps could not bind a free port in {START_ATTEMPTS} attempts")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="cases per operation and mode (the CI bound)")
    parser.add_argument("--max-time", type=int, default=0, help="a time budget instead (schemathesis repeats fuzzing until it is spent)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--schema", help="fuzz this file instead of the served /openapi.json (for editing it)")
    args, extra = parser.parse_known_args()

    binary = Path(os.environ.get("KPS_BIN", REPO_ROOT / "target/debug/kps"))
    st = Path(sys.executable).with_name("st")
    workdir = Path(tempfile.mkdtemp(prefix="kps-openapi-fuzz-"))
    process, base_url, log_path = start_kps(binary, workdir)

    # SIGTERM (the cargo driver's timeout) still stops kps through the finally block.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))
    try:
        command = [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            *([str(Path(args.schema).resolve()), "--url", base_url] if args.schema else [f"{base_url}/openapi.json"]),
            *(["--max-time", str(args.max_time)] if args.max_time else ["--max-examples", str(args.max_examples)]),
            "--seed",
            str(args.seed),
            "--no-color",
            *extra,
        ]
        print("openapi_fuzz:", " ".join(command), flush=True)
        started = time.monotonic()
        key = workdir / "fuzz_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fuzz", "-f", str(key)], check=True)
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(HERE / "openapi_fuzz_hooks.py"),
            "KPS_FUZZ_PUBLIC_KEY": f"{key}.pub",
            "KPS_FUZZ_PRIVATE_KEY": str(key),
        }
        run = subprocess.run(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, check=False)
        print(f"openapi_fuzz: schemathesis exited {run.returncode} after {time.monotonic() - started:.1f}s", flush=True)
        code = run.returncode
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            stopped = process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            stopped = None
        log = log_path.read_text(errors="replace")
        shutil.rmtree(workdir, ignore_errors=True)
    if "panicked" in log or stopped != 0:
        print(f"openapi_fuzz: kps exit code {stopped} after SIGTERM; log tail:\n{log[-4000:]}", flush=True)
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
