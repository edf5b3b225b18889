"""What the Python drivers need to run a kps of their own on 127.0.0.1 (standard library only: both the
client-compat venv and the OpenAPI fuzz venv import it)."""

import signal
import socket
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def die_with_parent() -> None:
    """Runs in the kps child before exec: if its parent is killed, the kernel sends kps SIGTERM."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the caller's teardown still stops kps
