"""The Huawei Cloud Python SDKs, unmodified, against kps in ``aksk`` mode (interface.md, kms-huawei.md §2).

huaweicloudsdkecs drives the Nova routes (``Nova*Keypair*``), huaweicloudsdkkps the KPS V3 routes. Both sign
every request with SDK-HMAC-SHA256 using ``BasicCredentials(ak, sk, project_id)``; the endpoint is
overridden to ``http://127.0.0.1:PORT`` with ``with_endpoints`` (the SDK keeps an ``http://`` endpoint as it
is and only prefixes ``https://`` to scheme-less ones), and no region is set, so the SDK never calls IAM.
Every test takes a credential of its own (a fresh user in a fresh project).
"""

import io
import itertools
import uuid
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions as sdk_exceptions
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkecs.v2 import (
    EcsClient,
    NovaCreateKeypairOption,
    NovaCreateKeypairRequest,
    NovaCreateKeypairRequestBody,
    NovaDeleteKeypairRequest,
    NovaListKeypairsRequest,
    NovaShowKeypairRequest,
)
from huaweicloudsdkkps.v3 import (
    BatchExportPrivateKeyRequest,
    BatchImportKeypairRequest,
    ClearPrivateKeyRequest,
    CreateKeypairAction,
    CreateKeypairRequest,
    CreateKeypairRequestBody,
    DeleteKeypairRequest,
    Encryption,
    ExportPrivateKeyRequest,
    ExportPrivateKeyRequestBody,
    ImportPrivateKeyKeypairBean,
    ImportPrivateKeyProtection,
    ImportPrivateKeyRequest,
    ImportPrivateKeyRequestBody,
    Keypair,
    KeypairBean,
    Keypairs,
    KeyProtection,
    KpsClient,
    ListKeypairDetailRequest,
    ListKeypairsRequest,
    UpdateKeypairDescriptionReq,
    UpdateKeypairDescriptionRequest,
    UpdateKeypairDescriptionRequestBody,
)

import sshkeys
from conftest import HTTP_TIMEOUT_S

_next_credential = itertools.count()


@pytest.fixture
def credential(kps_aksk_server):
    index = next(_next_credential)
    if index >= len(kps_aksk_server.credentials):
        pytest.fail("more aksk tests than credentials: raise AKSK_CREDENTIALS in conftest.py")
    return kps_aksk_server.credentials[index]


def _build(client_type, server, credential):
    config = HttpConfig.get_default_config()
    config.timeout = (10, HTTP_TIMEOUT_S)
    return (
        client_type.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(credential.ak, credential.sk, credential.project_id))
        .with_endpoints([server.base_url])
        .build()
    )


@pytest.fixture
def ecs(kps_aksk_server, credential):
    return _build(EcsClient, kps_aksk_server, credential)


@pytest.fixture
def kps(kps_aksk_server, credential):
    return _build(KpsClient, kps_aksk_server, credential)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ed25519_pair() -> tuple[str, str]:
    """(PKCS#8 PEM private key, OpenSSH public line) of a fresh Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private, sshkeys.openssh_public_line(key, "sdk")


# ---------------------------------------------------------------------------------------------------------
# huaweicloudsdkecs: Nova os-keypairs


def test_ecs_nova_keypair_lifecycle(ecs, credential):
    public = sshkeys.ed25519_public_line("ecs-sdk")
    name = unique("ecs-imported")
    created = ecs.nova_create_keypair(
        NovaCreateKeypairRequest(
            open_stack_api_version="compute 2.35",
            body=NovaCreateKeypairRequestBody(keypair=NovaCreateKeypairOption(name=name, public_key=public)),
        )
    )
    assert created.keypair.name == name
    assert created.keypair.public_key == public
    assert created.keypair.user_id == credential.user_id
    assert created.keypair.fingerprint == sshkeys.ssh_md5_fingerprint(public)

    generated_name = unique("ecs-generated")
    generated = ecs.nova_create_keypair(
        NovaCreateKeypairRequest(
            open_stack_api_version="compute 2.35",
            body=NovaCreateKeypairRequestBody(keypair=NovaCreateKeypairOption(name=generated_name)),
        )
    )
    assert generated.keypair.private_key.startswith("-----BEGIN")

    listed = ecs.nova_list_keypairs(NovaListKeypairsRequest(open_stack_api_version="compute 2.35"))
    names = sorted(item.keypair.name for item in listed.keypairs)
    assert names == sorted([name, generated_name])
    # limit/marker go in the (signed) query string.
    first = ecs.nova_list_keypairs(NovaListKeypairsRequest(limit=1, open_stack_api_version="compute 2.35"))
    assert [item.keypair.name for item in first.keypairs] == [min(name, generated_name)]
    rest = ecs.nova_list_keypairs(
        NovaListKeypairsRequest(limit=5, marker=min(name, generated_name), open_stack_api_version="compute 2.35")
    )
    assert [item.keypair.name for item in rest.keypairs] == [max(name, generated_name)]

    shown = ecs.nova_show_keypair(NovaShowKeypairRequest(keypair_name=name, open_stack_api_version="compute 2.35"))
    assert shown.keypair.name == name
    assert shown.keypair.user_id == credential.user_id
    assert shown.keypair.created_at is not None

    ecs.nova_delete_keypair(NovaDeleteKeypairRequest(keypair_name=name))
    ecs.nova_delete_keypair(NovaDeleteKeypairRequest(keypair_name=generated_name))
    with pytest.raises(sdk_exceptions.ClientRequestException) as missing:
        ecs.nova_show_keypair(NovaShowKeypairRequest(keypair_name=name, open_stack_api_version="compute 2.35"))
    assert missing.value.status_code == 404
    assert missing.value.error_code == "KPS.1601"


def test_ecs_with_a_wrong_secret_key_gets_kps_2002(kps_aksk_server, credential):
    wrong = type(credential)(credential.ak, credential.sk + "x", credential.user_id, credential.project_id)
    client = _build(EcsClient, kps_aksk_server, wrong)
    with pytest.raises(sdk_exceptions.ClientRequestException) as refused:
        client.nova_list_keypairs(NovaListKeypairsRequest())
    assert refused.value.status_code == 401
    assert refused.value.error_code == "KPS.2002"


# ---------------------------------------------------------------------------------------------------------
# huaweicloudsdkkps: KPS V3


def _create(kps, name, **fields):
    return kps.create_keypair(
        CreateKeypairRequest(body=CreateKeypairRequestBody(keypair=CreateKeypairAction(name=name, **fields)))
    )


def test_kps_create_list_show_update_delete(kps, credential):
    generated_name = unique("gen")
    generated = _create(kps, generated_name, type="ssh", scope="user")
    assert generated.keypair.name == generated_name
    assert generated.keypair.private_key.startswith("-----BEGIN")
    assert generated.keypair.user_id == credential.user_id

    public = sshkeys.ed25519_public_line("kps-sdk")
    imported_name = unique("imp")
    imported = _create(kps, imported_name, public_key=public)
    assert imported.keypair.public_key == public
    assert imported.keypair.private_key is None

    listed = kps.list_keypairs(ListKeypairsRequest())
    assert sorted(item.keypair.name for item in listed.keypairs) == sorted([generated_name, imported_name])
    assert listed.page_info.current_count == 2
    first = kps.list_keypairs(ListKeypairsRequest(limit="1"))
    assert len(first.keypairs) == 1 and first.page_info.next_marker == first.keypairs[0].keypair.name
    rest = kps.list_keypairs(ListKeypairsRequest(limit="10", marker=first.page_info.next_marker))
    assert [item.keypair.name for item in rest.keypairs] == [max(generated_name, imported_name)]

    kps.update_keypair_description(
        UpdateKeypairDescriptionRequest(
            keypair_name=imported_name,
            body=UpdateKeypairDescriptionRequestBody(keypair=UpdateKeypairDescriptionReq(description="via SDK")),
        )
    )
    detail = kps.list_keypair_detail(ListKeypairDetailRequest(keypair_name=imported_name))
    assert detail.keypair.description == "via SDK"
    assert detail.keypair.user_id == credential.user_id
    assert detail.keypair.fingerprint == sshkeys.ssh_md5_fingerprint(public)
    assert detail.keypair.is_key_protection is False

    kps.delete_keypair(DeleteKeypairRequest(keypair_name=imported_name))
    kps.delete_keypair(DeleteKeypairRequest(keypair_name=generated_name))
    with pytest.raises(sdk_exceptions.ClientRequestException) as missing:
        kps.list_keypair_detail(ListKeypairDetailRequest(keypair_name=imported_name))
    assert missing.value.status_code == 404


def test_kps_private_key_custody(kps):
    private, public = ed25519_pair()
    name = unique("custody")
    _create(kps, name, public_key=public)

    kps.import_private_key(
        ImportPrivateKeyRequest(
            body=ImportPrivateKeyRequestBody(
                keypair=ImportPrivateKeyKeypairBean(
                    name=name,
                    key_protection=ImportPrivateKeyProtection(
                        private_key=private, encryption=Encryption(type="default")
                    ),
                )
            )
        )
    )
    assert kps.list_keypair_detail(ListKeypairDetailRequest(keypair_name=name)).keypair.is_key_protection is True

    exported = kps.export_private_key(
        ExportPrivateKeyRequest(body=ExportPrivateKeyRequestBody(keypair=KeypairBean(name=name)))
    )
    assert exported.keypair.name == name
    assert exported.keypair.private_key == private

    kps.clear_private_key(ClearPrivateKeyRequest(keypair_name=name))
    assert kps.list_keypair_detail(ListKeypairDetailRequest(keypair_name=name)).keypair.is_key_protection is False
    with pytest.raises(sdk_exceptions.ClientRequestException) as cleared:
        kps.export_private_key(
            ExportPrivateKeyRequest(body=ExportPrivateKeyRequestBody(keypair=KeypairBean(name=name)))
        )
    assert (cleared.value.status_code, cleared.value.error_code) == (404, "KPS.1602")
    kps.delete_keypair(DeleteKeypairRequest(keypair_name=name))


def test_kps_batch_import_and_batch_export(kps):
    pairs = [ed25519_pair() for _ in range(2)]
    names = [unique("batch") for _ in pairs]
    bodies = [
        CreateKeypairRequestBody(
            keypair=CreateKeypairAction(
                name=name,
                public_key=public,
                key_protection=KeyProtection(private_key=private, encryption=Encryption(type="default")),
            )
        )
        for name, (private, public) in zip(names, pairs)
    ]
    imported = kps.batch_import_keypair(BatchImportKeypairRequest(body=bodies))
    assert [item.keypair.name for item in imported.succeeded_keypairs] == names
    assert imported.failed_keypairs == []

    # The same names again: every item fails as a duplicate, the answer is still 200.
    again = kps.batch_import_keypair(BatchImportKeypairRequest(body=bodies[:1]))
    assert again.succeeded_keypairs == []
    assert again.failed_keypairs[0].keypair_name == names[0]
    assert again.failed_keypairs[0].failed_reason.startswith("KPS.1701: ")

    exported = kps.batch_export_private_key(
        BatchExportPrivateKeyRequest(body=[Keypairs(keypair=Keypair(name=name)) for name in names])
    )
    archive = zipfile.ZipFile(io.BytesIO(exported.raw_content))
    assert archive.namelist() == [f"{name}.pem" for name in names]
    for name, (private, _public) in zip(names, pairs):
        assert archive.read(f"{name}.pem").decode() == private

    for name in names:
        kps.delete_keypair(DeleteKeypairRequest(keypair_name=name))
    assert kps.list_keypairs(ListKeypairsRequest()).keypairs == []
