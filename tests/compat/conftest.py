"""Fixtures for the client-compatibility tests.

One real kps server is started per test session (binary from ``KPS_BIN``, default
``target/release/kps``), on a free 127.0.0.1 port, with a fresh 0700 data directory and the built-in
defaults (noauth mode). It is stopped with SIGTERM at the end and must exit 0.

``KPS_COMPAT_URL=http://127.0.0.1:PORT`` runs the same tests against a server that is already running
instead (for example the real Nova peer of shared/nova-peer, to check that a test asserts Nova's
behaviour and not merely kps's). Nova routes only hex project ids, so every project id here is hex.

Authentication is kps's noauth token ``X-Auth-Token: <user_id>:<project_id>[:admin]``, sent by a
keystoneauth1 ``token_endpoint.Token`` plugin; the compute endpoint is always overridden to
``<base>/v2.1/<project_id>``. Every test gets fresh users, so tests never see each other's key pairs.

A second server, ``kps_aksk_server``, runs ``kps serve --auth aksk`` with a 0600 credentials file in its own
temp dir, for the Huawei Cloud SDKs (SDK-HMAC-SHA256 signatures, test_huaweicloud_sdk.py). It is started only
by the tests that use it, and skipped with ``KPS_COMPAT_URL`` (an external server has no known credentials).

``moto_kms`` starts moto's server (``moto_server``, from the venv) on a free 127.0.0.1 port as the AWS KMS,
and ``kps_aws_server`` a kps with ``kms.provider = aws`` pointed at it (test_aws_kms.py).
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from novaclient import api_versions
from novaclient import client as nova_client

from localserver import die_with_parent as _die_with_parent
from localserver import free_port as _free_port
from localserver import healthy as _healthy

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 30
HTTP_TIMEOUT_S = 120
START_ATTEMPTS = 5


@dataclass
class KpsServer:
    base_url: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    workdir: Path | None = None

    def log_tail(self, max_chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-max_chars:]


@dataclass(frozen=True)
class Caller:
    """Who a request is sent as: kps noauth token fields."""

    user_id: str
    project_id: str
    admin: bool = False

    @property
    def token(self) -> str:
        token = f"{self.user_id}:{self.project_id}"
        return token + ":admin" if self.admin else token


def _kps_binary() -> Path:
    path = Path(os.environ.get("KPS_BIN", "target/release/kps"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        pytest.exit(f"kps binary not found at {path} (build it or set KPS_BIN)", returncode=2)
    return path


def pytest_configure(config):
    # SIGTERM (e.g. the cargo driver's timeout) becomes KeyboardInterrupt, so fixture teardown still
    # stops kps instead of leaving it running.
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)


def _kps_env() -> dict:
    # The server must run on its built-in defaults: drop every KPS_* setting of the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPS_")}
    env["KPS_LOG"] = os.environ.get("KPS_LOG", "warn")
    return env


def _start_kps(binary: Path, workdir: Path, extra_args: tuple = (), extra_env: dict | None = None) -> KpsServer:
    """Start kps on a free port; retry on another port if the chosen one was taken meanwhile."""
    data_dir = workdir / "data"
    data_dir.mkdir(mode=0o700)
    os.chmod(data_dir, 0o700)
    for attempt in range(START_ATTEMPTS):
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = workdir / f"kps-{attempt}.log"
        with open(log_path, "wb") as log:
            # cwd = workdir: no config/kps.toml there, so the embedded defaults apply.
            process = subprocess.Popen(
                [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), *extra_args],
                cwd=workdir,
                env={**_kps_env(), **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        server = KpsServer(base_url=base_url, process=process, log_path=log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _healthy(base_url):
                return server
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()
            pytest.exit(f"kps not healthy after {STARTUP_TIMEOUT_S}s; log:\n{server.log_tail()}", returncode=3)
        if "in use" not in server.log_tail():
            pytest.exit(f"kps exited with {process.returncode} at startup; log:\n{server.log_tail()}", returncode=3)
    pytest.exit(f"kps could not bind a free port in {START_ATTEMPTS} attempts", returncode=3)


@pytest.fixture(scope="session")
def kps_server():
    external = os.environ.get("KPS_COMPAT_URL")
    if external:
        yield KpsServer(base_url=external.rstrip("/"))
        return
    binary = _kps_binary()
    workdir = Path(tempfile.mkdtemp(prefix="kps-compat-"))
    server = _start_kps(binary, workdir)
    try:
        yield server
    finally:
        _stop_kps(server, workdir)


def _stop_kps(server: KpsServer, workdir: Path) -> None:
    """SIGTERM, then the server must exit 0; the work dir is removed either way."""
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        code = None
    log = server.log_tail()
    shutil.rmtree(workdir, ignore_errors=True)
    assert code == 0, f"kps did not exit 0 after SIGTERM (exit code {code}); log:\n{log}"


@dataclass(frozen=True)
class AkskCredential:
    """One ``[[credentials]]`` entry of the aksk server: an AK/SK pair and the caller it stands for."""

    ak: str
    sk: str
    user_id: str
    project_id: str


@dataclass
class AkskServer:
    base_url: str
    credentials: list[AkskCredential]


AKSK_CREDENTIALS = 6


@pytest.fixture(scope="session")
def kps_aksk_server():
    """kps in ``aksk`` mode (``--auth aksk`` + ``KPS_AUTH_CREDENTIALS_FILE``, mode 0600) with a few members,
    each in a project of their own (hex ids, as Huawei's)."""
    if os.environ.get("KPS_COMPAT_URL"):
        pytest.skip("aksk tests start their own kps with a credentials file; not with KPS_COMPAT_URL")
    binary = _kps_binary()
    workdir = Path(tempfile.mkdtemp(prefix="kps-compat-aksk-"))
    credentials = [
        AkskCredential(
            ak="HPUA" + secrets.token_hex(8).upper(),
            sk=secrets.token_urlsafe(30),
            user_id=f"user-{uuid.uuid4().hex[:12]}",
            project_id=uuid.uuid4().hex,
        )
        for _ in range(AKSK_CREDENTIALS)
    ]
    entries = "".join(
        f'[[credentials]]\nak = "{c.ak}"\nsk = "{c.sk}"\nuser_id = "{c.user_id}"\n'
        f'project_id = "{c.project_id}"\nroles = ["member"]\n\n'
        for c in credentials
    )
    credentials_file = workdir / "credentials.toml"
    fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(entries)
    server = _start_kps(
        binary, workdir, ("--auth", "aksk"), {"KPS_AUTH_CREDENTIALS_FILE": str(credentials_file)}
    )
    try:
        yield AkskServer(base_url=server.base_url, credentials=credentials)
    finally:
        _stop_kps(server, workdir)


MOTO_REGION = "us-east-1"
MOTO_CREDENTIALS = {"aws_access_key_id": "AKIDKPSCOMPATTEST", "aws_secret_access_key": "kps-compat-secret"}


@dataclass
class MotoKms:
    endpoint: str
    process: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client("kms", endpoint_url=self.endpoint, region_name=MOTO_REGION, **MOTO_CREDENTIALS)


@pytest.fixture(scope="session")
def moto_kms():
    """moto's KMS on a free loopback port, stopped at the end of the session."""
    if os.environ.get("KPS_COMPAT_URL"):
        pytest.skip("the AWS KMS tests start their own kps and moto; not with KPS_COMPAT_URL")
    moto_server = Path(sys.executable).with_name("moto_server")
    workdir = Path(tempfile.mkdtemp(prefix="kps-compat-moto-"))
    for _attempt in range(START_ATTEMPTS):
        port = _free_port()
        log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed after the process ends
        process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        if process.poll() is None:
            break
        log.close()
    else:
        pytest.exit(f"moto_server did not start; log:\n{(workdir / 'moto.log').read_text()[-4000:]}", returncode=3)
    try:
        yield MotoKms(endpoint=endpoint, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def aws_kps_env(endpoint: str) -> dict:
    """kps's ``kms.*`` settings for an AWS KMS at ``endpoint`` (the credentials moto accepts)."""
    return {
        "KPS_KMS_PROVIDER": "aws",
        "KPS_KMS_ENDPOINT": endpoint,
        "KPS_KMS_REGION": MOTO_REGION,
        "KPS_KMS_AK": MOTO_CREDENTIALS["aws_access_key_id"],
        "KPS_KMS_SK": MOTO_CREDENTIALS["aws_secret_access_key"],
    }


@pytest.fixture(scope="session")
def kps_aws_server(moto_kms):
    """kps (noauth) whose KMS is moto: ``kms.provider = aws`` with an endpoint override."""
    binary = _kps_binary()
    workdir = Path(tempfile.mkdtemp(prefix="kps-compat-aws-"))
    server = _start_kps(binary, workdir, (), aws_kps_env(moto_kms.endpoint))
    server.workdir = workdir
    try:
        yield server
    finally:
        _stop_kps(server, workdir)


@pytest.fixture(scope="session")
def new_caller():
    """Factory: a fresh user in a fresh (or the given) project; ``admin=True`` adds the admin role."""

    def make(admin: bool = False, project_id: str | None = None) -> Caller:
        user_id = ("admin-" if admin else "user-") + uuid.uuid4().hex[:12]
        return Caller(user_id=user_id, project_id=project_id or uuid.uuid4().hex, admin=admin)

    return make


@pytest.fixture
def alice(new_caller) -> Caller:
    return new_caller()


@pytest.fixture(scope="session")
def compute_endpoint(kps_server):
    def endpoint(caller: Caller, api: str = "v2.1", project_in_url: bool = True) -> str:
        """``<base>/v2.1/<project>`` by default; ``api="v2"`` is the legacy v2 endpoint."""
        url = f"{kps_server.base_url}/{api}"
        return f"{url}/{caller.project_id}" if project_in_url else url

    return endpoint


@pytest.fixture(scope="session")
def ks_session_for(compute_endpoint):
    """Factory: a keystoneauth1 session that sends the caller's noauth token."""

    def make(caller: Caller, endpoint: str | None = None) -> ks_session.Session:
        auth = token_endpoint.Token(endpoint or compute_endpoint(caller), caller.token)
        return ks_session.Session(auth=auth, timeout=HTTP_TIMEOUT_S)

    return make


@pytest.fixture(scope="session")
def negotiated_version(kps_server) -> api_versions.APIVersion:
    """What novaclient negotiates against the server for "2.latest" (the ``nova`` CLI's default)."""
    caller = Caller(user_id="user-negotiate", project_id=uuid.uuid4().hex)
    endpoint = f"{kps_server.base_url}/v2.1/{caller.project_id}"
    sess = ks_session.Session(auth=token_endpoint.Token(endpoint, caller.token), timeout=HTTP_TIMEOUT_S)
    probe = nova_client.Client("2.1", session=sess, endpoint_override=endpoint)
    return api_versions.discover_version(probe, api_versions.APIVersion("2.latest"))


@pytest.fixture(scope="session")
def nova_for(ks_session_for, compute_endpoint, negotiated_version):
    """Factory: a novaclient v2 client for a caller at a microversion (default: the negotiated one)."""

    def make(caller: Caller, version: str | None = None, endpoint: str | None = None):
        version = version or negotiated_version.get_string()
        endpoint = endpoint or compute_endpoint(caller)
        return nova_client.Client(version, session=ks_session_for(caller, endpoint), endpoint_override=endpoint)

    return make
