"""python-novaclient against kps: what `nova keypair-*` and Python callers of novaclient rely on.

Spec: shared/spec/nova-keypairs.md (§6 operations, §7 client notes). Every test uses fresh users.
"""

import base64
import re
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from novaclient import api_versions
from novaclient import exceptions as nova_exc

import sshkeys

# Last microversion at which the server still generates key pairs (2.92 makes public_key mandatory).
LAST_GENERATING_VERSION = "2.91"
NOVA_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def nova(nova_for, alice):
    """alice's client at the negotiated microversion (2.96)."""
    return nova_for(alice)


@pytest.fixture
def nova_generating(nova_for, alice):
    """alice's client at 2.91, where create without public_key generates."""
    return nova_for(alice, LAST_GENERATING_VERSION)


def fields(kp) -> dict:
    """The JSON object novaclient built the resource from (list items keep their {"keypair": ...} wrapper)."""
    info = kp.to_dict()
    return info["keypair"] if set(info) == {"keypair"} else info


def import_ed25519(client, name: str):
    return client.keypairs.create(name, public_key=sshkeys.ed25519_public_line())


# --- version negotiation -------------------------------------------------------------------------


def test_novaclient_negotiates_its_maximum_2_96(negotiated_version):
    assert negotiated_version.get_string() == "2.96"


@pytest.mark.parametrize("version", ["2.2", "2.26", "2.27", "2.96"])
def test_novaclient_finds_microversion_header_in_responses(nova_for, alice, version):
    # Below 2.27 novaclient sends and checks only X-OpenStack-Nova-API-Version, from 2.27 on only
    # OpenStack-API-Version; a missing header makes it warn that the server ignores microversions.
    client = nova_for(alice, version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.keypairs.list()

    assert [str(w.message) for w in caught] == []


def test_project_less_endpoint_negotiates_and_works(nova_for, compute_endpoint, alice):
    endpoint = compute_endpoint(alice, project_in_url=False)
    probe = nova_for(alice, "2.1", endpoint=endpoint)
    version = api_versions.discover_version(probe, api_versions.APIVersion("2.latest"))
    client = nova_for(alice, version.get_string(), endpoint=endpoint)

    import_ed25519(client, "no-project-in-url")

    assert version.get_string() == "2.96"
    assert [kp.name for kp in client.keypairs.list()] == ["no-project-in-url"]
    assert nova_for(alice).keypairs.get("no-project-in-url").user_id == alice.user_id


# --- legacy v2 endpoint (/v2/<project>, no microversions) ----------------------------------------


@pytest.fixture
def nova_v2(nova_for, compute_endpoint, alice):
    """alice's client on the legacy /v2 endpoint at client version 2.0 (no microversion headers)."""
    return nova_for(alice, "2.0", endpoint=compute_endpoint(alice, api="v2"))


def test_legacy_v2_endpoint_negotiates_2_0(nova_for, compute_endpoint, alice):
    probe = nova_for(alice, "2.0", endpoint=compute_endpoint(alice, api="v2"))

    assert api_versions.discover_version(probe, api_versions.APIVersion("2.latest")).get_string() == "2.0"


def test_legacy_v2_endpoint_generates_key_pair(nova_v2, alice):
    kp = nova_v2.keypairs.create("legacy-generated")

    assert sshkeys.public_line_of_private_pem(kp.private_key) == sshkeys.without_comment(kp.public_key)
    assert kp.user_id == alice.user_id
    assert not hasattr(kp, "type")


def test_legacy_v2_endpoint_lists_shows_and_deletes(nova_v2):
    created = import_ed25519(nova_v2, "legacy")

    assert [kp.name for kp in nova_v2.keypairs.list()] == ["legacy"]
    assert nova_v2.keypairs.get("legacy").fingerprint == created.fingerprint
    resp, _body = nova_v2.client.delete("/os-keypairs/legacy")
    assert resp.status_code == 202
    assert list(nova_v2.keypairs.list()) == []


def test_legacy_v2_endpoint_strips_spaces_around_name(nova_v2):
    kp = import_ed25519(nova_v2, "  padded  ")

    assert kp.name == "padded"
    assert nova_v2.keypairs.get("padded").name == "padded"


# --- generation (versions < 2.92) ----------------------------------------------------------------


def test_generated_rsa_private_key_matches_public_key(nova_generating):
    kp = nova_generating.keypairs.create("gen-rsa")

    private_key = serialization.load_pem_private_key(kp.private_key.encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert private_key.key_size == 2048
    assert sshkeys.public_line_of_private_pem(kp.private_key) == sshkeys.without_comment(kp.public_key)


def test_generated_rsa_private_key_is_pkcs1_pem(nova_generating):
    kp = nova_generating.keypairs.create("gen-pkcs1")

    assert kp.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert kp.private_key.endswith("-----END RSA PRIVATE KEY-----\n")


def test_generated_public_key_is_openssh_rsa_with_nova_comment(nova_generating):
    kp = nova_generating.keypairs.create("gen-comment")

    assert kp.public_key.startswith("ssh-rsa AAAAB3NzaC1yc2E")
    assert kp.public_key.endswith(" Generated-by-Nova")


def test_generated_key_fingerprint_is_md5_of_public_blob(nova_generating):
    kp = nova_generating.keypairs.create("gen-fingerprint")

    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(kp.public_key)


def test_generated_key_reports_type_ssh_and_caller_as_owner(nova_generating, alice):
    kp = nova_generating.keypairs.create("gen-owner")

    assert kp.type == "ssh"
    assert kp.user_id == alice.user_id


def test_generate_at_2_1_returns_private_key_without_type(nova_for, alice):
    kp = nova_for(alice, "2.1").keypairs.create("gen-v21")

    assert sshkeys.public_line_of_private_pem(kp.private_key) == sshkeys.without_comment(kp.public_key)
    assert not hasattr(kp, "type")


def test_generated_key_pairs_are_distinct(nova_generating):
    public_keys = {nova_generating.keypairs.create(f"distinct-{i}").public_key for i in range(5)}

    assert len(public_keys) == 5


def test_generated_private_key_is_not_returned_by_show(nova_generating):
    nova_generating.keypairs.create("gen-show")

    shown = nova_generating.keypairs.get("gen-show")
    assert not hasattr(shown, "private_key")


def test_create_without_public_key_at_2_92_is_bad_request(nova):
    # novaclient >= 2.92 sends "public_key": null when no key is given (spec §7).
    with pytest.raises(nova_exc.BadRequest) as err:
        nova.keypairs.create("no-key", None)

    assert err.value.code == 400
    assert err.value.message == (
        "Invalid input for field/attribute public_key. Value: None. None is not of type 'string'"
    )


# --- x509 generation (2.2 - 2.91) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def x509_owner(new_caller):
    return new_caller()


@pytest.fixture(scope="module")
def x509_keypair(nova_for, x509_owner):
    """One generated x509 key pair (RSA generation is the slow part), shared by the x509 tests."""
    return nova_for(x509_owner, "2.2").keypairs.create("winrm", key_type="x509")


def test_generated_x509_private_key_is_base64_pkcs12_with_empty_password(x509_keypair):
    bundle = base64.b64decode(x509_keypair.private_key, validate=True)

    key, cert, _extra = pkcs12.load_key_and_certificates(bundle, b"")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert cert is not None


def test_generated_x509_private_key_loads_without_password(x509_keypair):
    bundle = base64.b64decode(x509_keypair.private_key, validate=True)

    key, cert, _extra = pkcs12.load_key_and_certificates(bundle, None)
    assert key is not None and cert is not None


def test_generated_x509_private_key_is_single_line_without_pem_armour(x509_keypair):
    assert "\n" not in x509_keypair.private_key.strip()
    assert "-----BEGIN" not in x509_keypair.private_key


def test_generated_x509_public_key_is_the_bundled_certificate(x509_keypair):
    cert = x509.load_pem_x509_certificate(x509_keypair.public_key.encode())
    bundle = base64.b64decode(x509_keypair.private_key)
    key, bundled_cert, _extra = pkcs12.load_key_and_certificates(bundle, b"")

    assert bundled_cert == cert
    assert key.public_key() == cert.public_key()
    assert key.key_size == 2048


def test_generated_x509_fingerprint_is_sha1_of_certificate(x509_keypair):
    cert = x509.load_pem_x509_certificate(x509_keypair.public_key.encode())

    assert x509_keypair.fingerprint == sshkeys.x509_sha1_fingerprint(cert)


def test_generated_x509_certificate_names_the_owner(x509_keypair, x509_owner):
    cert = x509.load_pem_x509_certificate(x509_keypair.public_key.encode())

    common_names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert [attr.value for attr in common_names] == [x509_owner.user_id]
    assert x509_keypair.type == "x509"


# --- import --------------------------------------------------------------------------------------


def test_import_ed25519_spec_vector_at_2_92_with_at_and_dot_in_name(nova, alice):
    kp = nova.keypairs.create("ops@laptop.1", public_key=sshkeys.SPEC_ED25519_PUBLIC_KEY)

    assert kp.name == "ops@laptop.1"
    assert kp.public_key == sshkeys.SPEC_ED25519_PUBLIC_KEY
    assert kp.fingerprint == sshkeys.SPEC_ED25519_FINGERPRINT
    assert kp.type == "ssh"
    assert kp.user_id == alice.user_id
    assert not hasattr(kp, "private_key")


def test_show_and_delete_name_with_at_and_dot(nova):
    import_ed25519(nova, "me@host.example")

    assert nova.keypairs.get("me@host.example").name == "me@host.example"
    nova.keypairs.delete("me@host.example")
    assert list(nova.keypairs.list()) == []


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_import_ecdsa_key(nova, curve):
    public_key = sshkeys.ecdsa_public_line(curve)

    kp = nova.keypairs.create(f"ecdsa-{curve.name}", public_key=public_key)

    assert kp.public_key == public_key
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(public_key)
    assert not hasattr(kp, "private_key")


@pytest.mark.parametrize("bits", [2048, 4096])
def test_import_rsa_key(nova, bits):
    public_key = sshkeys.rsa_public_line(bits)

    kp = nova.keypairs.create(f"rsa-{bits}", public_key=public_key)

    assert kp.public_key == public_key
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(public_key)


def test_import_keeps_public_key_file_content_verbatim(nova):
    # `nova keypair-add --pub-key FILE` sends the file as read: trailing newline and multi-word comment.
    public_key = sshkeys.ed25519_public_line("ops@laptop two words") + "\n"

    kp = nova.keypairs.create("from-file", public_key=public_key)

    assert kp.public_key == public_key
    assert nova.keypairs.get("from-file").public_key == public_key
    assert kp.fingerprint == sshkeys.ssh_md5_fingerprint(public_key)


def test_import_at_2_1_returns_200_fields_without_type(nova_for, alice):
    public_key = sshkeys.ed25519_public_line()

    kp = nova_for(alice, "2.1").keypairs.create("import-v21", public_key=public_key)

    assert fields(kp) == {
        "name": "import-v21",
        "public_key": public_key,
        "fingerprint": sshkeys.ssh_md5_fingerprint(public_key),
        "user_id": alice.user_id,
    }


def test_import_x509_certificate_fingerprint_is_sha1(nova):
    pem = sshkeys.self_signed_certificate_pem("winrm-import")

    kp = nova.keypairs.create("x509-import", public_key=pem, key_type="x509")

    assert kp.type == "x509"
    assert kp.public_key == pem
    assert kp.fingerprint == sshkeys.x509_sha1_fingerprint(x509.load_pem_x509_certificate(pem.encode()))


def test_import_invalid_public_key_is_bad_request(nova):
    with pytest.raises(nova_exc.BadRequest) as err:
        nova.keypairs.create("broken", public_key="ssh-rsa not-base64!")

    assert err.value.message == "Keypair data is invalid: failed to generate fingerprint"


def test_import_name_with_at_sign_before_2_92_is_bad_request(nova_for, alice):
    with pytest.raises(nova_exc.BadRequest) as err:
        nova_for(alice, "2.91").keypairs.create("ops@laptop", public_key=sshkeys.ed25519_public_line())

    assert err.value.message == (
        "Invalid input for field/attribute name. Value: ops@laptop. 'ops@laptop' does not match "
        r"'^[_\\- a-zA-Z0-9]+$'"
    )


def test_duplicate_name_is_conflict(nova):
    import_ed25519(nova, "twice")

    with pytest.raises(nova_exc.Conflict) as err:
        import_ed25519(nova, "twice")

    assert err.value.code == 409
    assert err.value.message == "Key pair 'twice' already exists."


def test_101st_key_pair_exceeds_default_quota(nova):
    for i in range(100):
        import_ed25519(nova, f"quota-{i:03d}")

    with pytest.raises(nova_exc.Forbidden) as err:
        import_ed25519(nova, "quota-100")

    assert err.value.message == "Quota exceeded, too many key pairs."
    assert len(nova.keypairs.list()) == 100


# --- list and paging -----------------------------------------------------------------------------


def test_list_returns_all_keys_sorted_by_name(nova):
    for name in ["charlie", "alpha", "bravo"]:
        import_ed25519(nova, name)

    assert [kp.name for kp in nova.keypairs.list()] == ["alpha", "bravo", "charlie"]


def test_list_items_have_nova_fields_only(nova):
    created = import_ed25519(nova, "listed")

    [item] = nova.keypairs.list()
    assert fields(item) == {
        "name": "listed",
        "public_key": created.public_key,
        "fingerprint": created.fingerprint,
        "type": "ssh",
    }


def test_list_of_user_without_keys_is_empty(nova):
    assert list(nova.keypairs.list()) == []


def test_list_pages_with_limit_and_marker(nova):
    names = [f"page-{i}" for i in (3, 1, 5, 2, 4)]
    for name in names:
        import_ed25519(nova, name)

    pages, marker = [], None
    while True:
        page = [kp.name for kp in nova.keypairs.list(limit=2, marker=marker)]
        pages.append(page)
        if len(page) < 2:
            break
        marker = page[-1]

    assert pages == [["page-1", "page-2"], ["page-3", "page-4"], ["page-5"]]


def test_list_with_marker_returns_keys_after_it(nova):
    for name in ["k-a", "k-b", "k-c"]:
        import_ed25519(nova, name)

    assert [kp.name for kp in nova.keypairs.list(marker="k-a")] == ["k-b", "k-c"]


def test_list_with_unknown_marker_is_bad_request(nova):
    with pytest.raises(nova_exc.BadRequest) as err:
        nova.keypairs.list(marker="nope")

    assert err.value.message == "Marker nope could not be found."


# --- show ----------------------------------------------------------------------------------------


def test_show_returns_nova_fields(nova, alice):
    created = import_ed25519(nova, "shown")

    shown = nova.keypairs.get("shown")

    assert set(fields(shown)) == {
        "id", "name", "public_key", "fingerprint", "user_id", "type",
        "created_at", "updated_at", "deleted", "deleted_at",
    }  # fmt: skip
    # The integer id stays in the JSON; novaclient's Keypair.id is the name.
    assert isinstance(fields(shown)["id"], int) and fields(shown)["id"] > 0
    assert shown.id == "shown"
    assert shown.public_key == created.public_key
    assert shown.fingerprint == created.fingerprint
    assert shown.user_id == alice.user_id
    assert shown.type == "ssh"
    assert NOVA_TIME.match(shown.created_at), shown.created_at
    assert (shown.updated_at, shown.deleted, shown.deleted_at) == (None, False, None)


def test_show_name_with_spaces(nova_for, alice):
    # Names may contain spaces before 2.92; the client percent-encodes them in the path.
    client = nova_for(alice, "2.91")
    import_ed25519(client, "my laptop key")

    assert client.keypairs.get("my laptop key").name == "my laptop key"


def test_find_by_name_as_the_nova_shell_does(nova):
    created = import_ed25519(nova, "findable")

    assert nova.keypairs.find(name="findable").fingerprint == created.fingerprint


def test_show_missing_key_is_not_found_with_nova_message(nova, alice):
    with pytest.raises(nova_exc.NotFound) as err:
        nova.keypairs.get("nope")

    assert err.value.code == 404
    assert err.value.message == f"Keypair nope not found for user {alice.user_id}"


def test_malformed_token_is_unauthorized(nova_for, alice):
    client = nova_for(alice)
    client.client.session.auth.token = "one-field-only"

    with pytest.raises(nova_exc.Unauthorized) as err:
        client.keypairs.list()

    assert err.value.code == 401


def test_error_carries_request_id(nova):
    with pytest.raises(nova_exc.NotFound) as err:
        nova.keypairs.get("nope")

    assert REQUEST_ID.match(err.value.request_id or ""), err.value.request_id


def test_response_request_id_is_recorded(nova):
    kp = import_ed25519(nova, "with-request-id")

    assert len(kp.request_ids) == 1
    assert REQUEST_ID.match(kp.request_ids[0]), kp.request_ids


def test_keys_belong_to_the_user_not_the_project(nova_for, alice):
    import_ed25519(nova_for(alice), "travelling")
    same_user_other_project = type(alice)(user_id=alice.user_id, project_id=alice.project_id[::-1])

    assert [kp.name for kp in nova_for(same_user_other_project).keypairs.list()] == ["travelling"]


# --- delete --------------------------------------------------------------------------------------


def test_delete_removes_key(nova):
    import_ed25519(nova, "doomed")

    nova.keypairs.delete("doomed")

    with pytest.raises(nova_exc.NotFound):
        nova.keypairs.get("doomed")
    assert list(nova.keypairs.list()) == []


def test_delete_through_resource_object(nova):
    kp = import_ed25519(nova, "self-deleting")

    kp.delete()

    assert list(nova.keypairs.list()) == []


def test_delete_missing_key_is_not_found(nova, alice):
    with pytest.raises(nova_exc.NotFound) as err:
        nova.keypairs.delete("nope")

    assert err.value.message == f"Keypair nope not found for user {alice.user_id}"


@pytest.mark.parametrize(("version", "status"), [("2.1", 202), ("2.2", 204), ("2.96", 204)])
def test_delete_status_per_microversion(nova_for, alice, version, status):
    client = nova_for(alice, version)
    import_ed25519(nova_for(alice), "status")

    resp, body = client.client.delete("/os-keypairs/status")

    assert resp.status_code == status
    assert not body


# --- admin and user_id (2.10+) -------------------------------------------------------------------


@pytest.fixture
def admin(new_caller):
    return new_caller(admin=True)


@pytest.fixture
def bob(new_caller):
    return new_caller()


def test_admin_creates_key_for_another_user(nova_for, admin, bob):
    client = nova_for(admin, "2.10")

    kp = client.keypairs.create("for-bob", public_key=sshkeys.ed25519_public_line(), user_id=bob.user_id)

    assert kp.user_id == bob.user_id
    assert [k.name for k in nova_for(bob).keypairs.list()] == ["for-bob"]
    assert list(nova_for(admin).keypairs.list()) == []


def test_admin_generates_key_for_another_user(nova_for, admin, bob):
    kp = nova_for(admin, "2.10").keypairs.create("generated-for-bob", user_id=bob.user_id)

    assert kp.user_id == bob.user_id
    assert sshkeys.public_line_of_private_pem(kp.private_key) == sshkeys.without_comment(kp.public_key)


def test_admin_lists_another_users_keys(nova_for, admin, bob):
    for name in ["b2", "b1"]:
        import_ed25519(nova_for(bob), name)

    assert [kp.name for kp in nova_for(admin).keypairs.list(user_id=bob.user_id)] == ["b1", "b2"]


def test_admin_pages_another_users_keys(nova_for, admin, bob):
    for name in ["p1", "p2", "p3"]:
        import_ed25519(nova_for(bob), name)
    client = nova_for(admin)

    first = [kp.name for kp in client.keypairs.list(user_id=bob.user_id, limit=2)]
    rest = [kp.name for kp in client.keypairs.list(user_id=bob.user_id, limit=2, marker=first[-1])]

    assert (first, rest) == (["p1", "p2"], ["p3"])


def test_admin_shows_another_users_key(nova_for, admin, bob):
    created = import_ed25519(nova_for(bob), "bobs-key")

    shown = nova_for(admin).keypairs.get("bobs-key", user_id=bob.user_id)

    assert shown.user_id == bob.user_id
    assert shown.fingerprint == created.fingerprint


def test_admin_show_of_missing_key_names_the_target_user(nova_for, admin, bob):
    with pytest.raises(nova_exc.NotFound) as err:
        nova_for(admin).keypairs.get("nope", user_id=bob.user_id)

    assert err.value.message == f"Keypair nope not found for user {bob.user_id}"


def test_admin_deletes_another_users_key(nova_for, admin, bob):
    import_ed25519(nova_for(bob), "bobs-key")

    nova_for(admin).keypairs.delete("bobs-key", user_id=bob.user_id)

    assert list(nova_for(bob).keypairs.list()) == []


def test_non_admin_cannot_create_for_another_user(nova_for, alice, bob):
    with pytest.raises(nova_exc.Forbidden) as err:
        nova_for(alice).keypairs.create("sneaky", public_key=sshkeys.ed25519_public_line(), user_id=bob.user_id)

    assert err.value.code == 403
    assert err.value.message == "Policy doesn't allow os_compute_api:os-keypairs:create to be performed."


def test_non_admin_cannot_list_another_users_keys(nova_for, alice, bob):
    with pytest.raises(nova_exc.Forbidden) as err:
        nova_for(alice).keypairs.list(user_id=bob.user_id)

    assert err.value.message == "Policy doesn't allow os_compute_api:os-keypairs:index to be performed."


def test_non_admin_cannot_show_another_users_key(nova_for, alice, bob):
    import_ed25519(nova_for(bob), "private")

    with pytest.raises(nova_exc.Forbidden) as err:
        nova_for(alice).keypairs.get("private", user_id=bob.user_id)

    assert err.value.message == "Policy doesn't allow os_compute_api:os-keypairs:show to be performed."


def test_non_admin_cannot_delete_another_users_key(nova_for, alice, bob):
    import_ed25519(nova_for(bob), "private")

    with pytest.raises(nova_exc.Forbidden) as err:
        nova_for(alice).keypairs.delete("private", user_id=bob.user_id)

    assert err.value.message == "Policy doesn't allow os_compute_api:os-keypairs:delete to be performed."
    assert [kp.name for kp in nova_for(bob).keypairs.list()] == ["private"]


def test_non_admin_may_name_themselves_as_user_id(nova_for, alice):
    kp = nova_for(alice).keypairs.create("mine", public_key=sshkeys.ed25519_public_line(), user_id=alice.user_id)

    assert kp.user_id == alice.user_id
    assert nova_for(alice).keypairs.get("mine", user_id=alice.user_id).name == "mine"
