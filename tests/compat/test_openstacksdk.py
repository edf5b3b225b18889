"""openstacksdk against kps: the proxy (`conn.compute.*`, used by the `openstack` CLI) and the cloud layer.

The SDK pins its Keypair calls to microversion 2.10 and cannot page key pairs (spec §7), so paging is
not tested here. Every test uses fresh users.
"""

import base64

import openstack
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

import sshkeys
from conftest import HTTP_TIMEOUT_S


class ResponseRecorder:
    """A `requests` response hook that keeps every response the SDK received."""

    def __init__(self):
        self.responses: list[requests.Response] = []

    def __call__(self, response, *args, **kwargs):
        self.responses.append(response)
        return response

    def keypair_responses(self) -> list[requests.Response]:
        return [r for r in self.responses if "/os-keypairs" in r.request.url]


@pytest.fixture(scope="session")
def sdk_for(compute_endpoint):
    """Factory: an openstack Connection for a caller (token auth + compute endpoint override)."""

    def make(caller, recorder: ResponseRecorder | None = None, project_in_url: bool = True):
        http = requests.Session()
        if recorder is not None:
            http.hooks["response"].append(recorder)
        endpoint = compute_endpoint(caller, project_in_url=project_in_url)
        sess = ks_session.Session(
            auth=token_endpoint.Token(endpoint, caller.token), session=http, timeout=HTTP_TIMEOUT_S
        )
        return openstack.connection.Connection(session=sess, compute_endpoint_override=endpoint)

    return make


@pytest.fixture
def conn(sdk_for, alice):
    return sdk_for(alice)


@pytest.fixture
def admin(new_caller):
    return new_caller(admin=True)


@pytest.fixture
def bob(new_caller):
    return new_caller()


def import_ed25519(connection, name: str, **attrs):
    return connection.compute.create_keypair(name=name, public_key=sshkeys.ed25519_public_line(), **attrs)


# --- microversion --------------------------------------------------------------------------------


def test_sdk_sends_microversion_2_10_and_server_echoes_it(sdk_for, alice):
    recorder = ResponseRecorder()
    connection = sdk_for(alice, recorder)

    import_ed25519(connection, "versioned")
    list(connection.compute.keypairs())

    responses = recorder.keypair_responses()
    assert [r.status_code for r in responses] == [201, 200]
    for response in responses:
        assert response.request.headers["OpenStack-API-Version"] == "compute 2.10"
        assert response.headers["OpenStack-API-Version"] == "compute 2.10"
        assert response.headers["X-OpenStack-Nova-API-Version"] == "2.10"


# --- create / import -----------------------------------------------------------------------------


def test_sdk_generated_private_key_matches_public_key(conn, alice):
    kp = conn.compute.create_keypair(name="sdk-generated")

    private_key = serialization.load_pem_private_key(kp.private_key.encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert sshkeys.public_line_of_private_pem(kp.private_key) == sshkeys.without_comment(kp.public_key)
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(kp.public_key)
    assert (kp.name, kp.type, kp.user_id) == ("sdk-generated", "ssh", alice.user_id)


def test_sdk_generates_x509_key_pair(conn, alice):
    kp = conn.compute.create_keypair(name="sdk-winrm", type="x509")

    cert = x509.load_pem_x509_certificate(kp.public_key.encode())
    key, bundled_cert, _extra = pkcs12.load_key_and_certificates(base64.b64decode(kp.private_key), b"")
    assert kp.type == "x509"
    assert bundled_cert == cert and key.public_key() == cert.public_key()
    assert kp.fingerprint == sshkeys.x509_sha1_fingerprint(cert)


def test_sdk_imports_ed25519_spec_vector(conn, alice):
    kp = conn.compute.create_keypair(name="ops-laptop", public_key=sshkeys.SPEC_ED25519_PUBLIC_KEY)

    assert kp.public_key == sshkeys.SPEC_ED25519_PUBLIC_KEY
    assert kp.fingerprint == sshkeys.SPEC_ED25519_FINGERPRINT
    assert (kp.type, kp.user_id, kp.private_key) == ("ssh", alice.user_id, None)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_sdk_imports_ecdsa_key(conn, curve):
    public_key = sshkeys.ecdsa_public_line(curve)

    kp = conn.compute.create_keypair(name=f"ecdsa-{curve.name}", public_key=public_key)

    assert kp.public_key == public_key
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(public_key)


def test_sdk_imports_rsa_key(conn):
    public_key = sshkeys.rsa_public_line(3072)

    kp = conn.compute.create_keypair(name="rsa-3072", public_key=public_key)

    assert kp.public_key == public_key
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(public_key)


def test_sdk_imports_public_key_file_content_verbatim(conn):
    # `openstack keypair create --public-key FILE` sends the file content, trailing newline included.
    public_key = sshkeys.ecdsa_public_line(ec.SECP256R1(), "me@laptop") + "\n"

    kp = conn.compute.create_keypair(name="from-file", public_key=public_key)

    assert kp.public_key == public_key
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(public_key)


def test_sdk_duplicate_name_is_conflict(conn):
    import_ed25519(conn, "twice")

    with pytest.raises(openstack.exceptions.ConflictException) as err:
        import_ed25519(conn, "twice")

    assert err.value.status_code == 409
    assert err.value.details == "Key pair 'twice' already exists."


def test_sdk_invalid_public_key_is_bad_request(conn):
    with pytest.raises(openstack.exceptions.BadRequestException) as err:
        conn.compute.create_keypair(name="broken", public_key="ssh-ed25519 AAAA")

    assert err.value.details == "Keypair data is invalid: failed to generate fingerprint"


def test_sdk_name_with_at_sign_is_bad_request_at_2_10(conn):
    with pytest.raises(openstack.exceptions.BadRequestException) as err:
        import_ed25519(conn, "ops@laptop")

    assert err.value.details == (
        "Invalid input for field/attribute name. Value: ops@laptop. 'ops@laptop' does not match "
        r"'^[_\\- a-zA-Z0-9]+$'"
    )


def test_sdk_project_less_endpoint(sdk_for, alice):
    connection = sdk_for(alice, project_in_url=False)

    created = import_ed25519(connection, "no-project-in-url")

    assert [kp.name for kp in connection.compute.keypairs()] == ["no-project-in-url"]
    assert connection.compute.get_keypair("no-project-in-url").fingerprint == created.fingerprint
    connection.compute.delete_keypair("no-project-in-url", ignore_missing=False)


# --- list ----------------------------------------------------------------------------------------


def test_sdk_lists_keypairs_sorted_by_name(conn):
    for name in ["zulu", "alpha", "mike"]:
        import_ed25519(conn, name)

    assert [kp.name for kp in conn.compute.keypairs()] == ["alpha", "mike", "zulu"]


def test_sdk_list_items_carry_fingerprint_and_public_key(conn):
    created = import_ed25519(conn, "listed")

    [item] = conn.compute.keypairs()
    assert (item.name, item.fingerprint, item.public_key, item.type) == (
        "listed", created.fingerprint, created.public_key, "ssh",
    )  # fmt: skip


def test_sdk_list_of_user_without_keys_is_empty(conn):
    assert list(conn.compute.keypairs()) == []


# --- show (get / find) ---------------------------------------------------------------------------


def test_sdk_get_keypair_returns_details(conn, alice):
    created = import_ed25519(conn, "details")

    kp = conn.compute.get_keypair("details")

    assert (kp.name, kp.id, kp.user_id, kp.type) == ("details", "details", alice.user_id, "ssh")
    assert (kp.public_key, kp.fingerprint) == (created.public_key, created.fingerprint)
    assert kp.created_at is not None
    assert kp.is_deleted is False
    assert kp.private_key is None


def test_sdk_find_keypair_by_name(conn):
    created = import_ed25519(conn, "findable")

    assert conn.compute.find_keypair("findable").fingerprint == created.fingerprint


def test_sdk_find_missing_keypair_returns_none(conn):
    assert conn.compute.find_keypair("nope") is None


def test_sdk_find_missing_keypair_raises_when_asked(conn):
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.compute.find_keypair("nope", ignore_missing=False)


def test_sdk_get_missing_keypair_is_not_found_with_nova_message(conn, alice):
    with pytest.raises(openstack.exceptions.NotFoundException) as err:
        conn.compute.get_keypair("nope")

    assert err.value.status_code == 404
    assert err.value.details == f"Keypair nope not found for user {alice.user_id}"
    assert err.value.request_id.startswith("req-")


# --- delete --------------------------------------------------------------------------------------


def test_sdk_delete_keypair(conn):
    import_ed25519(conn, "doomed")

    conn.compute.delete_keypair("doomed")

    assert conn.compute.find_keypair("doomed") is None


def test_sdk_delete_missing_keypair_is_ignored_by_default(conn):
    assert conn.compute.delete_keypair("nope") is None


def test_sdk_delete_missing_keypair_raises_when_asked(conn):
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.compute.delete_keypair("nope", ignore_missing=False)


# --- admin and user_id (2.10) --------------------------------------------------------------------


def test_sdk_admin_creates_key_for_another_user(sdk_for, admin, bob):
    kp = import_ed25519(sdk_for(admin), "for-bob", user_id=bob.user_id)

    assert kp.user_id == bob.user_id
    assert [k.name for k in sdk_for(bob).compute.keypairs()] == ["for-bob"]


def test_sdk_admin_lists_another_users_keys(sdk_for, admin, bob):
    for name in ["b2", "b1"]:
        import_ed25519(sdk_for(bob), name)

    assert [kp.name for kp in sdk_for(admin).compute.keypairs(user_id=bob.user_id)] == ["b1", "b2"]


def test_sdk_admin_gets_another_users_key(sdk_for, admin, bob):
    created = import_ed25519(sdk_for(bob), "bobs-key")

    kp = sdk_for(admin).compute.get_keypair("bobs-key", user_id=bob.user_id)

    assert (kp.user_id, kp.fingerprint) == (bob.user_id, created.fingerprint)


def test_sdk_admin_deletes_another_users_key(sdk_for, admin, bob):
    import_ed25519(sdk_for(bob), "bobs-key")

    sdk_for(admin).compute.delete_keypair("bobs-key", user_id=bob.user_id, ignore_missing=False)

    assert list(sdk_for(bob).compute.keypairs()) == []


def test_sdk_non_admin_cannot_get_another_users_key(sdk_for, alice, bob):
    import_ed25519(sdk_for(bob), "private")

    with pytest.raises(openstack.exceptions.ForbiddenException) as err:
        sdk_for(alice).compute.get_keypair("private", user_id=bob.user_id)

    assert err.value.details == "Policy doesn't allow os_compute_api:os-keypairs:show to be performed."


def test_sdk_non_admin_cannot_create_for_another_user(sdk_for, alice, bob):
    with pytest.raises(openstack.exceptions.ForbiddenException) as err:
        import_ed25519(sdk_for(alice), "sneaky", user_id=bob.user_id)

    assert err.value.details == "Policy doesn't allow os_compute_api:os-keypairs:create to be performed."


# --- cloud layer (conn.create_keypair & co., used by Ansible's openstack.cloud collection) -------


def test_cloud_layer_create_list_get_delete(conn):
    public_key = sshkeys.ed25519_public_line()

    created = conn.create_keypair("cloud-key", public_key=public_key)
    assert created.public_key == public_key
    assert [kp.name for kp in conn.list_keypairs()] == ["cloud-key"]
    assert conn.get_keypair("cloud-key").fingerprint == created.fingerprint
    assert conn.delete_keypair("cloud-key") is True
    assert conn.delete_keypair("cloud-key") is False
    assert conn.get_keypair("cloud-key") is None


def test_cloud_layer_generates_key_pair(conn):
    kp = conn.create_keypair("cloud-generated")

    assert sshkeys.public_line_of_private_pem(kp.private_key) == sshkeys.without_comment(kp.public_key)
