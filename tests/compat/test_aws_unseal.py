"""Auto-unseal with ``kms.provider = aws`` against moto's KMS (README "Auto-unseal").

The master keyring is wrapped by an AWS key (``custody.master_key_kms_key``): ``kps master-key generate
--kms-key`` and ``kps master-key wrap`` write only ciphertext, ``kps serve`` unwraps it at startup (one Decrypt
bound to the EncryptionContext ``{"kps": "master-keyring"}``) and ``default`` custody works; ``kps master-key
unwrap`` gives the same keys back. The KMS-down behaviour (503 KPS.1801, background recovery) is covered
against kms-mock in tests/api/unseal.rs.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
import uuid
from pathlib import Path

import pytest
import requests
from conftest import _kps_binary, _start_kps, _stop_kps, aws_kps_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

TIMEOUT_S = 60
ALIAS = "kps-unseal"
CONTEXT = {"kps": "master-keyring"}


@pytest.fixture(scope="module")
def unseal_key(moto_kms):
    """An enabled symmetric key behind ``alias/kps-unseal``: its id."""
    kms = moto_kms.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/{ALIAS}", TargetKeyId=key_id)
    return key_id


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="kps-compat-unseal-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unseal_env(moto_kms, workdir: Path) -> dict:
    """kps's settings: moto as the KMS, the keyring outside the data dir (``_start_kps`` creates that)."""
    return {
        **aws_kps_env(moto_kms.endpoint),
        "KPS_MASTER_KEY_FILE": str(workdir / "master.key"),
        "KPS_CUSTODY_MASTER_KEY_KMS_KEY": ALIAS,
    }


def master_key(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """``kps master-key <args>`` with ``env`` only."""
    return subprocess.run(
        [str(_kps_binary()), "master-key", *args, "--data-dir", str(workdir / "data")],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=workdir,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )


def keyring(workdir: Path) -> dict:
    return tomllib.loads((workdir / "master.key").read_text())


def plaintext_keys(workdir: Path) -> dict:
    return {key["id"]: key["key_hex"] for key in keyring(workdir)["keys"]}


def assert_wrapped(workdir: Path, key_id: str) -> dict:
    text = (workdir / "master.key").read_text()
    assert "key_hex" not in text, text
    wrapped = tomllib.loads(text)
    assert wrapped["format"] == "kms-wrapped/v1", wrapped
    assert wrapped["kms_key"] == ALIAS and wrapped["key_id"] == key_id, wrapped
    assert (workdir / "master.key").stat().st_mode & 0o777 == 0o600
    return wrapped


def default_escrow_round_trip(base_url: str) -> None:
    project = uuid.uuid4().hex
    headers = {"X-Auth-Token": f"user-{uuid.uuid4().hex[:8]}:{project}", "Content-Type": "application/json"}
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    body = {"keypair": {"name": "escrowed", "public_key": public.decode(),
                        "key_protection": {"private_key": private, "encryption": {"type": "default"}}}}
    created = requests.post(f"{base_url}/v3/{project}/keypairs", headers=headers, data=json.dumps(body),
                            timeout=TIMEOUT_S)
    assert created.status_code == 200, created.text
    exported = requests.post(f"{base_url}/v3/{project}/keypairs/private-key/export", headers=headers,
                             data=json.dumps({"keypair": {"name": "escrowed"}}), timeout=TIMEOUT_S)
    assert exported.status_code == 200, exported.text
    assert exported.json()["keypair"]["private_key"] == private


def test_a_keyring_generated_wrapped_opens_at_startup_and_serves_default_custody(moto_kms, unseal_key, workdir):
    env = unseal_env(moto_kms, workdir)
    made = master_key(workdir, env, "generate", "--kms-key", ALIAS)
    assert made.returncode == 0, made.stderr
    wrapped = assert_wrapped(workdir, unseal_key)

    # AWS itself binds the wrapped data key to the keyring's EncryptionContext.
    kms = moto_kms.client()
    blob = base64.b64decode(wrapped["wrapped_data_key"])
    assert len(kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"]) == 32
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={})

    server = _start_kps(_kps_binary(), workdir, (), env)
    try:
        default_escrow_round_trip(server.base_url)
        unwrapped = master_key(workdir, env, "unwrap")
        assert unwrapped.returncode == 0, unwrapped.stderr
        assert len(plaintext_keys(workdir)) == 1
    finally:
        _stop_kps(server, workdir)


def test_wrap_then_unwrap_keeps_the_keys_and_kps_starts_on_the_wrapped_keyring(moto_kms, unseal_key, workdir):
    env = unseal_env(moto_kms, workdir)
    plain_env = {k: v for k, v in env.items() if k != "KPS_CUSTODY_MASTER_KEY_KMS_KEY"}
    assert master_key(workdir, plain_env, "generate").returncode == 0
    keys = plaintext_keys(workdir)

    wrapped = master_key(workdir, env, "wrap")
    assert wrapped.returncode == 0, wrapped.stderr
    assert_wrapped(workdir, unseal_key)
    for key_hex in keys.values():
        assert key_hex not in (workdir / "master.key").read_text()
    again = master_key(workdir, env, "wrap")
    assert again.returncode != 0 and "wrapped already" in again.stderr, again.stderr

    server = _start_kps(_kps_binary(), workdir, (), env)
    try:
        default_escrow_round_trip(server.base_url)
        unwrapped = master_key(workdir, env, "unwrap")
        assert unwrapped.returncode == 0, unwrapped.stderr
        assert plaintext_keys(workdir) == keys
    finally:
        _stop_kps(server, workdir)
