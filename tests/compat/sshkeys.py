"""Key material for the tests, made with `cryptography`, and the fingerprints Nova computes."""

import base64
import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

# nova-keypairs.md §6.1 test vector: the Ed25519 key derived from the seed 00 01 02 ... 1f.
SPEC_ED25519_SEED = bytes(range(32))
SPEC_ED25519_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 ops"
SPEC_ED25519_FINGERPRINT = "f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5"


def openssh_public_line(private_key, comment: str) -> str:
    blob = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{blob.decode()} {comment}"


def ed25519_public_line(comment: str = "compat-test") -> str:
    return openssh_public_line(ed25519.Ed25519PrivateKey.generate(), comment)


def ecdsa_public_line(curve: ec.EllipticCurve, comment: str = "compat-test") -> str:
    return openssh_public_line(ec.generate_private_key(curve), comment)


def rsa_public_line(bits: int = 2048, comment: str = "compat-test") -> str:
    return openssh_public_line(rsa.generate_private_key(public_exponent=65537, key_size=bits), comment)


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def ssh_md5_fingerprint(public_line: str) -> str:
    """Nova's fingerprint: MD5 of the base64-decoded second space-separated field."""
    return colon_hex(hashlib.md5(base64.b64decode(public_line.split(" ")[1])).digest())


def x509_sha1_fingerprint(cert: x509.Certificate) -> str:
    return colon_hex(cert.fingerprint(hashes.SHA1()))


def self_signed_certificate_pem(common_name: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def public_line_of_private_pem(private_pem: str) -> str:
    """`<algo> <base64>` (no comment) of the public half of a PEM/OpenSSH private key."""
    data = private_pem.encode()
    if b"OPENSSH PRIVATE KEY" in data:
        key = serialization.load_ssh_private_key(data, password=None)
    else:
        key = serialization.load_pem_private_key(data, password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def without_comment(public_line: str) -> str:
    return " ".join(public_line.split(" ")[:2])
