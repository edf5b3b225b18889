"""kps with ``kms.provider = aws`` against moto's KMS (kms-huawei.md §7).

The keys are made with boto3 in moto; kps reaches moto only through its own adapter (aws-sdk-kms, SigV4,
``kms.endpoint`` override). What is checked: escrow by alias, ``alias/`` name and key id, with the private
key exported byte-for-byte; imports with a matching and a mismatched private key; disabled, pending-deletion,
non-symmetric and unknown keys refused with the catalogue codes and nothing stored; the data key is bound to
the record by
the EncryptionContext (AWS itself refuses to unwrap it without the record's four strings); an unreachable
KMS is a 503 KPS.1801 with nothing stored while the rest of the service keeps working; ``kps rewrap`` moves
default escrows onto an AWS key.

Not checkable with moto 5.2: a key disabled *after* escrow. moto's Decrypt and GenerateDataKey ignore the
key state (real AWS answers DisabledException / KMSInvalidStateException); kps's mapping of those answers is
covered by the unit tests of src/kms/transport.rs, and kms-mock exercises the same path for Huawei.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import requests
from conftest import _free_port, _kps_binary, _start_kps, _stop_kps, aws_kps_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def aws_keys(moto_kms):
    """Keys in moto: an enabled symmetric key behind ``alias/kps-escrow``, a disabled one, one pending
    deletion, an RSA key, and a second enabled key."""
    kms = moto_kms.client()

    def key(alias: str, **create) -> str:
        key_id = kms.create_key(**create)["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=key_id)
        return key_id

    keys = {
        "escrow": key("kps-escrow"),
        "disabled": key("kps-disabled"),
        "doomed": key("kps-doomed"),
        "rsa": key("kps-rsa", KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT"),
        "rewrap": key("kps-rewrap"),
    }
    kms.disable_key(KeyId=keys["disabled"])
    kms.schedule_key_deletion(KeyId=keys["doomed"], PendingWindowInDays=7)
    return keys


class Api:
    """Raw HTTP against one kps as one noauth caller."""

    def __init__(self, base_url: str, admin: bool = False):
        self.base_url = base_url
        self.project = uuid.uuid4().hex
        self.user = "user-" + uuid.uuid4().hex[:12]
        token = f"{self.user}:{self.project}" + (":admin" if admin else "")
        self.headers = {"X-Auth-Token": token, "Content-Type": "application/json"}

    def post(self, path: str, body: dict) -> requests.Response:
        url = f"{self.base_url}{path.format(p=self.project)}"
        return requests.post(url, headers=self.headers, data=json.dumps(body), timeout=TIMEOUT_S)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base_url}{path.format(p=self.project)}", headers=self.headers, timeout=TIMEOUT_S)

    def create(self, name: str, encryption: dict, **fields) -> requests.Response:
        keypair = {"name": name, "key_protection": {"encryption": encryption}, **fields}
        if "private_key" in fields:
            keypair["key_protection"]["private_key"] = keypair.pop("private_key")
        return self.post("/v2.1/{p}/os-keypairs", {"keypair": keypair})

    def export(self, name: str) -> requests.Response:
        return self.post("/v3/{p}/keypairs/private-key/export", {"keypair": {"name": name}})

    def names(self) -> list[str]:
        answer = self.get("/v2.1/{p}/os-keypairs")
        assert answer.status_code == 200, answer.text
        return [k["keypair"]["name"] for k in answer.json()["keypairs"]]


def kms_encryption(**reference) -> dict:
    return {"type": "kms", **reference}


def assert_error(answer: requests.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error_code"] == code, body
    return body


def ed25519_pair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " aws-test"


def test_generated_keys_escrow_under_every_kind_of_reference(kps_aws_server, aws_keys):
    api = Api(kps_aws_server.base_url)
    references = {
        "by-alias": {"kms_key_name": "kps-escrow"},
        "by-alias-prefix": {"kms_key_name": "alias/kps-escrow"},
        "by-id": {"kms_key_id": aws_keys["escrow"]},
    }
    for name, reference in references.items():
        created = api.create(name, kms_encryption(**reference))
        assert created.status_code == 200, created.text
        private_key = created.json()["keypair"]["private_key"]
        exported = api.export(name)
        assert exported.status_code == 200, exported.text
        assert exported.json()["keypair"]["private_key"] == private_key, name
        assert exported.headers["Cache-Control"] == "no-store"


def test_imports_escrow_only_a_matching_private_key(kps_aws_server, aws_keys):
    api = Api(kps_aws_server.base_url)
    private, public = ed25519_pair()
    other_private, _ = ed25519_pair()
    mismatch = api.create("mismatch", kms_encryption(kms_key_name="kps-escrow"), public_key=public,
                          private_key=other_private)
    assert_error(mismatch, 400, "KPS.1302")
    imported = api.create("imported", kms_encryption(kms_key_name="kps-escrow"), public_key=public,
                          private_key=private)
    assert imported.status_code == 200, imported.text
    assert "private_key" not in imported.json()["keypair"]
    assert api.export("imported").json()["keypair"]["private_key"] == private
    assert api.names() == ["imported"]


@pytest.mark.parametrize(
    "reference, code",
    [
        ({"kms_key_name": "kps-disabled"}, "KPS.1803"),
        ({"kms_key_name": "kps-doomed"}, "KPS.1804"),
        ({"kms_key_name": "kps-rsa"}, "KPS.1401"),
        ({"kms_key_name": "no-such-alias"}, "KPS.1802"),
        ({"kms_key_id": "0b5e7a4c-2f1d-4e8a-9c3b-6d2f1a0e5b7c"}, "KPS.1802"),
    ],
)
def test_unusable_keys_are_refused_and_nothing_is_stored(kps_aws_server, aws_keys, reference, code):
    api = Api(kps_aws_server.base_url)
    assert_error(api.create("refused", kms_encryption(**reference)), 400, code)
    assert api.names() == []


def kps_admin_command(server, admin: Api, *args: str) -> subprocess.CompletedProcess:
    """``kps <args>`` against the running server: its data dir is locked, so the command goes through the
    admin API at ``--url`` with the admin token."""
    return subprocess.run(
        [str(_kps_binary()), *args, "--data-dir", str(server.workdir / "data"), "--url", server.base_url,
         "--token", admin.headers["X-Auth-Token"]],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=server.workdir,
        env={"PATH": os.environ.get("PATH", "")},
    )


def backup_records(server, admin: Api) -> list[dict]:
    """Every key pair record, through the running server's admin API (`kps backup export`)."""
    out = Path(tempfile.mkdtemp(prefix="kps-aws-backup-")) / "backup.jsonl"
    try:
        export = kps_admin_command(server, admin, "backup", "export", str(out))
        assert export.returncode == 0, export.stderr
        lines = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return [line["record"] for line in lines if line["type"] == "keypair"]


def test_the_data_key_is_bound_to_its_record_by_the_encryption_context(kps_aws_server, aws_keys, moto_kms):
    api = Api(kps_aws_server.base_url)
    assert api.create("bound", kms_encryption(kms_key_name="kps-escrow")).status_code == 200
    admin = Api(kps_aws_server.base_url, admin=True)
    record = next(
        r for r in backup_records(kps_aws_server, admin) if r["project_id"] == api.project and r["name"] == "bound"
    )
    sealed = record["sealed"]
    assert sealed["encryptor"] == "kms" and sealed["key_ref"] == aws_keys["escrow"], sealed
    blob = base64.b64decode(sealed["wrapped_dek"])
    context = {"kps:project": api.project, "kps:user": api.user, "kps:name": "bound",
               "kps:record": str(record["id"])}
    kms = moto_kms.client()
    assert len(kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]) == 32
    for wrong in ({}, {**context, "kps:name": "other"}, {**context, "kps:record": str(record["id"] + 1)}):
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=wrong)


@pytest.fixture
def fresh_kps():
    """Factory: a kps of this test's own (its data is not shared), stopped at the end of the test."""
    started = []

    def start(kms_endpoint: str, log_level: str = "warn"):
        workdir = Path(tempfile.mkdtemp(prefix="kps-compat-aws-own-"))
        env = {**aws_kps_env(kms_endpoint), "KPS_LOG": log_level}
        server = _start_kps(_kps_binary(), workdir, (), env)
        server.workdir = workdir
        started.append(server)
        return server

    yield start
    for server in started:
        _stop_kps(server, server.workdir)


def test_rewrap_moves_every_escrow_onto_another_aws_key(fresh_kps, moto_kms, aws_keys):
    server = fresh_kps(moto_kms.endpoint)
    api = Api(server.base_url)
    created = {
        "was-default": api.create("was-default", {"type": "default"}),
        "was-escrow": api.create("was-escrow", kms_encryption(kms_key_name="kps-escrow")),
    }
    assert all(answer.status_code == 200 for answer in created.values()), created
    admin = Api(server.base_url, admin=True)
    rewrap = kps_admin_command(server, admin, "rewrap", "--to-kms-key", "kps-rewrap")
    assert rewrap.returncode == 0, rewrap.stderr
    records = {r["name"]: r for r in backup_records(server, admin)}
    for name, answer in created.items():
        assert records[name]["sealed"]["encryptor"] == "kms", records[name]
        assert records[name]["sealed"]["key_ref"] == aws_keys["rewrap"], records[name]
        assert api.export(name).json()["keypair"]["private_key"] == answer.json()["keypair"]["private_key"]


def test_an_unreachable_kms_is_503_with_nothing_stored_and_the_service_stays_up(fresh_kps, aws_keys):
    server = fresh_kps(f"http://127.0.0.1:{_free_port()}")
    api = Api(server.base_url)
    body = assert_error(api.create("escrowed", kms_encryption(kms_key_name="kps-escrow")), 503, "KPS.1801")
    assert "3 attempts" in body["error_msg"], body
    assert api.names() == []
    plain = api.post("/v2.1/{p}/os-keypairs", {"keypair": {"name": "plain"}})
    assert plain.status_code == 200, plain.text
    assert api.names() == ["plain"]


def test_trace_logs_hold_no_key_material(fresh_kps, moto_kms, aws_keys):
    """At KPS_LOG=trace the AWS SDK would log request and response bodies (data keys); kps caps it."""
    server = fresh_kps(moto_kms.endpoint, log_level="trace")
    api = Api(server.base_url)
    created = api.create("traced", kms_encryption(kms_key_name="kps-escrow"))
    assert created.status_code == 200, created.text
    exported = api.export("traced")
    assert exported.status_code == 200, exported.text
    log = server.log_path.read_text(errors="replace")
    assert "traced" in log, "the trace log has the request lines"
    for secret in ("Plaintext", "CiphertextBlob", "BEGIN RSA PRIVATE KEY", "kps-compat-secret"):
        assert secret not in log, secret
    private_key = created.json()["keypair"]["private_key"]
    for line in private_key.splitlines()[1:-1]:
        assert line not in log
