"""schemathesis hooks for openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

`filter_failure`, and a narrow one: a schema-valid request that kps rejects is still a failure, except when
the answer's `error_code` is one of the rules below, which depend on stored data, on key material or on the
server's configuration, and which no JSON Schema can state. Every one of them is also named in the
document's descriptions. Nothing else is forgiven: no other check and no other code.

`map_case`: random strings are never keys, so without help every import would stop at the key-material
check. About half of the generated `public_key` strings (chosen by the string, so a run is repeatable) are
replaced by a real OpenSSH public key, and a `key_protection.private_key` beside it by the matching private
key (files named by KPS_FUZZ_PUBLIC_KEY / KPS_FUZZ_PRIVATE_KEY, made by openapi_fuzz.py with ssh-keygen).
Negative cases are left alone, so what they made schema-violating stays so.
"""

import json
import os
import zlib

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

NOT_STATABLE_AS_SCHEMA = {
    # Key material: a public key, certificate or private key that does not parse, is of an unsupported type
    # or size, is encrypted, or does not match the public key. A schema can say "a string", not "a key".
    "KPS.1201", "KPS.1202", "KPS.1203", "KPS.1204", "KPS.1301", "KPS.1302", "KPS.1304",
    # `encryption.type = kms` on a server without a KMS (the fuzz run has none): configuration, not shape.
    "KPS.1402",
    # A paging marker that names no key pair of the caller: stored data.
    "KPS.1603",
    # Two items of one batch with the same name: JSON Schema's `uniqueItems` compares whole items, it
    # cannot say "distinct by `keypair.name`".
    "KPS.1013",
}


def _error_code(response) -> str | None:
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError):
        return None
    return body.get("error_code") if isinstance(body, dict) else None


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure except a positive-data rejection for one of the rules above."""
    if isinstance(failure, RejectedPositiveData):
        return _error_code(response) not in NOT_STATABLE_AS_SCHEMA
    return True


def _read(variable: str) -> str | None:
    path = os.environ.get(variable)
    return open(path, encoding="ascii").read() if path else None


PUBLIC_KEY = _read("KPS_FUZZ_PUBLIC_KEY")
PRIVATE_KEY = _read("KPS_FUZZ_PRIVATE_KEY")


def _with_real_keys(item):
    keypair = item.get("keypair") if isinstance(item, dict) else None
    if not isinstance(keypair, dict) or not isinstance(keypair.get("public_key"), str):
        return
    if zlib.crc32(keypair["public_key"].encode("utf-8", "surrogatepass")) % 2:
        return
    keypair["public_key"] = PUBLIC_KEY
    protection = keypair.get("key_protection")
    if isinstance(protection, dict) and isinstance(protection.get("private_key"), str):
        protection["private_key"] = PRIVATE_KEY


@schemathesis.hook
def map_case(context, case):
    mode = getattr(getattr(case.meta, "generation", None), "mode", None)
    if PUBLIC_KEY and PRIVATE_KEY and not (mode is not None and mode.is_negative):
        for item in case.body if isinstance(case.body, list) else [case.body]:
            _with_real_keys(item)
    return case
