//! The KPS V3 custody API through the router (kps-v3.md): key pairs with scope and description, and the
//! private-key custody operations.

use std::io::Read;

use serde_json::{Value, json};

use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, ED25519_VECTOR, Kps, RSA_PRIVATE_KEY, RSA_PUBLIC_KEY};

async fn v3(kps: &Kps, method: &str, path: &str, token: &str, body: Option<&Value>) -> crate::Answer {
    let text = body.map(Value::to_string);
    let headers = [("x-auth-token", token), ("content-type", "application/json;charset=UTF-8")];
    kps.call(method, path, &headers, text.as_deref()).await
}

fn default_protection(private_key: Option<&str>) -> Value {
    let mut protection = json!({"encryption": {"type": "default"}});
    if let Some(key) = private_key {
        protection["private_key"] = json!(key);
    }
    protection
}

#[tokio::test]
async fn create_list_show_update_delete() {
    let kps = Kps::new();
    let created =
        v3(&kps, "POST", "/v3/p/keypairs", "u:p", Some(&json!({"keypair": {"name": "gen", "algorithm": "ED25519"}})))
            .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let keypair = created.json()["keypair"].clone();
    assert!(keypair["private_key"].as_str().is_some_and(|k| k.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")));
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let imported = v3(
        &kps,
        "POST",
        "/v3/p/keypairs",
        "u:p",
        Some(&json!({"keypair": {"name": "imp", "public_key": ED25519_VECTOR}})),
    )
    .await;
    assert_eq!(imported.status, 200);
    assert!(imported.json()["keypair"].get("private_key").is_none());

    let list = v3(&kps, "GET", "/v3/p/keypairs?limit=1", "u:p", None).await;
    assert_eq!(list.status, 200);
    let body = list.json();
    assert_eq!(body["keypairs"][0]["keypair"]["name"], "gen");
    assert_eq!(body["keypairs"][0]["keypair"]["scope"], "user");
    assert_eq!(body["keypairs"][0]["keypair"]["frozen_state"], "0");
    assert_eq!(body["keypairs"][0]["keypair"]["is_key_protection"], false);
    assert_eq!(body["page_info"], json!({"current_count": 1, "next_marker": "gen"}));
    let last = v3(&kps, "GET", "/v3/p/keypairs?limit=1&marker=gen", "u:p", None).await;
    assert_eq!(last.json()["page_info"], json!({"current_count": 1}), "no next_marker when nothing follows");

    let update =
        v3(&kps, "PUT", "/v3/p/keypairs/imp", "u:p", Some(&json!({"keypair": {"description": "break-glass key"}})))
            .await;
    assert_eq!(update.status, 200);
    assert!(update.body.is_empty());
    assert_eq!(update.header("content-type"), None);
    let show = v3(&kps, "GET", "/v3/p/keypairs/imp", "u:p", None).await.json()["keypair"].clone();
    assert_eq!(show["description"], "break-glass key");
    assert_eq!(show["algorithm"], "ED25519");
    assert_eq!(show["frozen_state"], 0);
    assert!(show["create_time"].as_i64().is_some_and(|t| t > 1_700_000_000_000), "milliseconds");
    assert!(show["update_time"].as_i64() >= show["create_time"].as_i64());
    assert!(show.get("key_id").is_none());
    let keys: Vec<&str> = show.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "id",
            "type",
            "scope",
            "public_key",
            "fingerprint",
            "is_key_protection",
            "deleted",
            "description",
            "user_id",
            "create_time",
            "update_time",
            "frozen_state",
            "algorithm"
        ]
    );

    let deleted = v3(&kps, "DELETE", "/v3/p/keypairs/imp", "u:p", None).await;
    assert_eq!(deleted.status, 204);
    v3(&kps, "GET", "/v3/p/keypairs/imp", "u:p", None).await.assert_error(
        404,
        "KPS.1601",
        "Keypair imp not found for user u",
    );
}

#[tokio::test]
async fn nova_and_v3_see_the_same_records() {
    let kps = Kps::new();
    kps.import("u:p", "from-nova", ED25519_VECTOR).await;
    let show = v3(&kps, "GET", "/v3/p/keypairs/from-nova", "u:p", None).await;
    assert_eq!(show.json()["keypair"]["scope"], "user");
    v3(
        &kps,
        "POST",
        "/v3/p/keypairs",
        "u:p",
        Some(&json!({"keypair": {"name": "from-v3", "public_key": ED25519_VECTOR}})),
    )
    .await;
    let nova = kps.nova("GET", "/v2.1/os-keypairs/from-v3", "u:p", None, None).await;
    assert_eq!(nova.status, 200);
}

#[tokio::test]
async fn private_key_import_export_clear_and_reimport() {
    let kps = Kps::new();
    v3(
        &kps,
        "POST",
        "/v3/p/keypairs",
        "u:p",
        Some(&json!({"keypair": {"name": "db-admin", "public_key": ED25519_PUBLIC_KEY.trim_end()}})),
    )
    .await;
    let import_body =
        json!({"keypair": {"name": "db-admin", "key_protection": default_protection(Some(ED25519_PRIVATE_KEY))}});
    let imported = v3(&kps, "POST", "/v3/p/keypairs/private-key/import", "u:p", Some(&import_body)).await;
    assert_eq!(imported.status, 200, "{}", String::from_utf8_lossy(&imported.body));
    assert_eq!(
        imported.json(),
        json!({"keypair": {"name": "db-admin", "user_id": "u", "key_protection": {"encryption": {"type": "default"}}}})
    );
    let again = v3(&kps, "POST", "/v3/p/keypairs/private-key/import", "u:p", Some(&import_body)).await;
    again.assert_error(409, "KPS.1702", "Keypair db-admin already has an escrowed private key; clear it first");
    assert_eq!(
        v3(&kps, "GET", "/v3/p/keypairs/db-admin", "u:p", None).await.json()["keypair"]["is_key_protection"],
        true
    );

    let export_body = json!({"keypair": {"name": "db-admin"}});
    let exported = v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "u:p", Some(&export_body)).await;
    assert_eq!(exported.status, 200);
    assert_eq!(
        exported.json(),
        json!({"keypair": {"name": "db-admin", "private_key": ED25519_PRIVATE_KEY}}),
        "byte for byte"
    );
    assert_eq!(exported.header("cache-control"), Some("no-store"));
    assert_eq!(exported.header("pragma"), Some("no-cache"));

    let cleared = v3(&kps, "DELETE", "/v3/p/keypairs/db-admin/private-key", "u:p", None).await;
    assert_eq!(cleared.status, 200);
    let after = v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "u:p", Some(&export_body)).await;
    after.assert_error(404, "KPS.1602", "Keypair db-admin has no escrowed private key");
    let twice = v3(&kps, "DELETE", "/v3/p/keypairs/db-admin/private-key", "u:p", None).await;
    twice.assert_error(404, "KPS.1602", "Keypair db-admin has no escrowed private key");
    let reimported = v3(&kps, "POST", "/v3/p/keypairs/private-key/import", "u:p", Some(&import_body)).await;
    assert_eq!(reimported.status, 200);
    let mismatch =
        json!({"keypair": {"name": "db-admin", "key_protection": default_protection(Some(RSA_PRIVATE_KEY))}});
    v3(&kps, "DELETE", "/v3/p/keypairs/db-admin/private-key", "u:p", None).await;
    let answer = v3(&kps, "POST", "/v3/p/keypairs/private-key/import", "u:p", Some(&mismatch)).await;
    answer.assert_error(400, "KPS.1302", "Private key does not match the public key of keypair db-admin");
}

#[tokio::test]
async fn generated_escrowed_keys_export_exactly_what_create_returned() {
    let kps = Kps::new();
    let created = v3(
        &kps,
        "POST",
        "/v3/p/keypairs",
        "u:p",
        Some(&json!({"keypair": {"name": "web", "key_protection": default_protection(None)}})),
    )
    .await;
    let private_key = created.json()["keypair"]["private_key"].as_str().expect("private key").to_owned();
    let exported =
        v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "u:p", Some(&json!({"keypair": {"name": "web"}}))).await;
    assert_eq!(exported.json()["keypair"]["private_key"], private_key);
}

#[tokio::test]
async fn domain_keys_are_shared_but_only_their_creator_or_an_admin_reveals_them() {
    let kps = Kps::new();
    let body = json!({"keypair": {"name": "team", "scope": "domain", "public_key": RSA_PUBLIC_KEY.trim_end(),
        "key_protection": default_protection(Some(RSA_PRIVATE_KEY))}});
    assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "bob:p", Some(&body)).await.status, 200);
    let show = v3(&kps, "GET", "/v3/p/keypairs/team", "alice:p", None).await;
    assert_eq!(show.json()["keypair"]["scope"], "domain");
    let nova = kps.nova("GET", "/v2.1/os-keypairs", "alice:p", None, None).await;
    assert_eq!(nova.json()["keypairs"][0]["keypair"]["name"], "team");
    let export = json!({"keypair": {"name": "team"}});
    let denied = v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "alice:p", Some(&export)).await;
    denied.assert_error(403, "KPS.2003", "Policy doesn't allow kps:keypairs:export_private_key to be performed.");
    let denied = v3(&kps, "DELETE", "/v3/p/keypairs/team/private-key", "alice:p", None).await;
    denied.assert_error(403, "KPS.2003", "Policy doesn't allow kps:keypairs:clear_private_key to be performed.");
    assert_eq!(v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "bob:p", Some(&export)).await.status, 200);
    assert_eq!(v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "root:p:admin", Some(&export)).await.status, 200);
    let clash = v3(
        &kps,
        "POST",
        "/v3/p/keypairs",
        "carol:p",
        Some(&json!({"keypair": {"name": "team", "public_key": ED25519_VECTOR}})),
    )
    .await;
    clash.assert_error(409, "KPS.1701", "Key pair 'team' already exists.");
    assert_eq!(v3(&kps, "DELETE", "/v3/p/keypairs/team", "alice:p", None).await.status, 204, "any member may delete");
}

#[tokio::test]
async fn a_foreign_user_id_needs_admin_in_both_scopes() {
    let kps = Kps::new();
    let denied = "Policy doesn't allow kps:keypairs:create to be performed.";
    for scope in ["user", "domain"] {
        let name = format!("for-root-{scope}");
        let body = json!({"keypair": {"name": name, "scope": scope, "user_id": "root", "public_key": ED25519_VECTOR}});
        v3(&kps, "POST", "/v3/p/keypairs", "alice:p", Some(&body)).await.assert_error(403, "KPS.2003", denied);
        let batch = json!([body.clone()]);
        let answer = v3(&kps, "POST", "/v3/p/keypairs/batch-import", "alice:p", Some(&batch)).await;
        answer.assert_error(403, "KPS.2003", "Policy doesn't allow kps:keypairs:batch_import to be performed.");
        let own = json!({"keypair": {"name": name, "scope": scope, "user_id": "alice", "public_key": ED25519_VECTOR}});
        assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "alice:p", Some(&own)).await.status, 200, "her own id");
        let body = json!({"keypair": {"name": format!("{name}-2"), "scope": scope, "user_id": "root",
            "public_key": ED25519_VECTOR}});
        let created = v3(&kps, "POST", "/v3/p/keypairs", "admin:p:admin", Some(&body)).await;
        assert_eq!(created.status, 200, "an admin may: {}", String::from_utf8_lossy(&created.body));
        assert_eq!(created.json()["keypair"]["user_id"], "root");
    }
}

#[tokio::test]
async fn domain_keys_count_against_their_creators_quota() {
    let kps = Kps::with_config(|c| c.quota.key_pairs = 2);
    let create =
        |name: &str, scope: &str| json!({"keypair": {"name": name, "scope": scope, "public_key": ED25519_VECTOR}});
    for name in ["d1", "d2"] {
        assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "bob:p", Some(&create(name, "domain"))).await.status, 200);
    }
    let full = v3(&kps, "POST", "/v3/p/keypairs", "bob:p", Some(&create("d3", "domain"))).await;
    full.assert_error(403, "KPS.1501", "Quota exceeded, too many key pairs.");
    let body = json!({"keypair": {"name": "u1", "public_key": ED25519_VECTOR}}).to_string();
    let nova = kps.nova("POST", "/v2.1/os-keypairs", "bob:q", None, Some(&body)).await;
    nova.assert_error(403, "KPS.1501", "Quota exceeded, too many key pairs.");

    // Mixed: one user key and one domain key fill a quota of 2 too; another member's quota is their own.
    assert_eq!(v3(&kps, "DELETE", "/v3/p/keypairs/d2", "alice:p", None).await.status, 204);
    kps.import("bob:q", "u1", ED25519_VECTOR).await;
    let full = v3(&kps, "POST", "/v3/p/keypairs", "bob:p", Some(&create("d3", "domain"))).await;
    full.assert_error(403, "KPS.1501", "Quota exceeded, too many key pairs.");
    assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "alice:p", Some(&create("a1", "domain"))).await.status, 200);
    assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "alice:p", Some(&create("a2", "user"))).await.status, 200);
}

#[tokio::test]
async fn batch_import_reports_each_item() {
    let kps = Kps::new();
    kps.import("u:p", "taken", ED25519_VECTOR).await;
    let body = json!([
        {"keypair": {"name": "ci-runner", "public_key": ED25519_VECTOR}},
        {"keypair": {"name": "taken", "public_key": ED25519_VECTOR}},
        {"keypair": {"name": "bad-key", "public_key": "garbage"}},
    ]);
    let answer = v3(&kps, "POST", "/v3/p/keypairs/batch-import", "u:p", Some(&body)).await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["succeeded_keypairs"][0]["keypair"]["name"], "ci-runner");
    assert_eq!(
        body["failed_keypairs"],
        json!([{"keypair_name": "taken", "failed_reason": "KPS.1701: Key pair 'taken' already exists."},
               {"keypair_name": "bad-key", "failed_reason": "KPS.1201: Keypair data is invalid: failed to generate fingerprint"}])
    );
    let empty = v3(&kps, "POST", "/v3/p/keypairs/batch-import", "u:p", Some(&json!([]))).await;
    empty.assert_error(400, "KPS.1012", "A batch must contain between 1 and 10 key pairs, got 0.");
    let dup = json!([{"keypair": {"name": "a", "public_key": ED25519_VECTOR}}, {"keypair": {"name": "a", "public_key": ED25519_VECTOR}}]);
    v3(&kps, "POST", "/v3/p/keypairs/batch-import", "u:p", Some(&dup)).await.assert_error(
        400,
        "KPS.1013",
        "Key pair name a appears more than once in the batch.",
    );
    let object = v3(&kps, "POST", "/v3/p/keypairs/batch-import", "u:p", Some(&json!({}))).await;
    object.assert_error(400, "KPS.1001", "{} is not of type 'array'");
}

#[tokio::test]
async fn batch_export_is_a_zip_of_pem_entries_all_or_nothing() {
    let kps = Kps::new();
    for (name, public_key, private_key) in
        [("ed", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY), ("rsa", RSA_PUBLIC_KEY, RSA_PRIVATE_KEY)]
    {
        let body = json!({"keypair": {"name": name, "public_key": public_key.trim_end(), "key_protection": default_protection(Some(private_key))}});
        assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "u:p", Some(&body)).await.status, 200);
    }
    kps.import("u:p", "plain", ED25519_VECTOR).await;
    let request = json!([{"keypair": {"name": "rsa"}}, {"keypair": {"name": "ed", "is_key_protection": true}}]);
    let answer = v3(&kps, "POST", "/v3/p/keypairs/private-key/batch-export", "u:p", Some(&request)).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), Some("application/zip"));
    assert_eq!(answer.header("content-disposition"), Some("attachment; filename=\"keypairs.zip\""));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(answer.body.clone())).expect("zip");
    let names: Vec<String> =
        (0..archive.len()).map(|i| archive.by_index(i).expect("entry").name().to_owned()).collect();
    assert_eq!(names, ["rsa.pem", "ed.pem"]);
    let mut text = String::new();
    archive.by_index(1).expect("entry").read_to_string(&mut text).expect("read");
    assert_eq!(text, ED25519_PRIVATE_KEY);

    let missing = json!([{"keypair": {"name": "ed"}}, {"keypair": {"name": "plain"}}, {"keypair": {"name": "nope"}}]);
    let answer = v3(&kps, "POST", "/v3/p/keypairs/private-key/batch-export", "u:p", Some(&missing)).await;
    answer.assert_error(404, "KPS.1602", "Keypair plain has no escrowed private key");
}

#[tokio::test]
async fn custody_disabled_refuses_reveal_but_allows_clear() {
    let kps = Kps::with_config(|c| c.custody.enabled = false);
    let body = json!({"keypair": {"name": "k", "public_key": ED25519_VECTOR}});
    assert_eq!(v3(&kps, "POST", "/v3/p/keypairs", "u:p", Some(&body)).await.status, 200);
    let export =
        v3(&kps, "POST", "/v3/p/keypairs/private-key/export", "u:p", Some(&json!({"keypair": {"name": "k"}}))).await;
    export.assert_error(403, "KPS.1901", "Private key custody is disabled on this server");
    let clear = v3(&kps, "DELETE", "/v3/p/keypairs/k/private-key", "u:p", None).await;
    assert_eq!(clear.json()["error_code"], "KPS.1602", "clear is allowed: it reaches the existence check");
}

#[tokio::test]
async fn routing_rules_of_v3() {
    let kps = Kps::new();
    let not_implemented = v3(&kps, "POST", "/v3/p/keypairs/associate", "u:p", Some(&json!({}))).await;
    not_implemented.assert_error(
        501,
        "KPS.1014",
        "Operation associate_keypair needs servers and is not supported by this service",
    );
    let tasks = v3(&kps, "DELETE", "/v3/p/failed-tasks", "u:p", None).await;
    tasks.assert_error(
        501,
        "KPS.1014",
        "Operation delete_all_failed_task needs servers and is not supported by this service",
    );
    let method = v3(&kps, "GET", "/v3/p/keypairs/batch-import", "u:p", None).await;
    method.assert_error(405, "KPS.1011", "Method GET is not allowed for this resource.");
    assert_eq!(method.header("allow"), Some("POST"));
    let slash = v3(&kps, "GET", "/v3/p/keypairs/", "u:p", None).await;
    assert_eq!(slash.status, 404);
    let query = v3(&kps, "GET", "/v3/p/keypairs?foo=1", "u:p", None).await;
    query.assert_error(400, "KPS.1003", "Additional properties are not allowed ('foo' was unexpected)");
    let limit = v3(&kps, "GET", "/v3/p/keypairs?limit=0", "u:p", None).await;
    assert_eq!(limit.json()["error_code"], "KPS.1004");
    let project = v3(&kps, "GET", "/v3/other/keypairs", "u:p", None).await;
    assert_eq!(project.json()["error_code"], "KPS.1005");
    let version = kps
        .call("GET", "/v3/p/keypairs", &[("x-auth-token", "u:p"), ("openstack-api-version", "compute 2.200")], None)
        .await;
    assert_eq!(version.status, 200, "microversion headers are ignored on V3");
    assert_eq!(version.header("openstack-api-version"), None);
    let named = v3(
        &kps,
        "POST",
        "/v3/p/keypairs",
        "u:p",
        Some(&json!({"keypair": {"name": "private-key", "public_key": ED25519_VECTOR}})),
    )
    .await;
    assert_eq!(named.status, 200);
    assert_eq!(v3(&kps, "GET", "/v3/p/keypairs/private-key", "u:p", None).await.status, 200);
    let bad_name = v3(&kps, "POST", "/v3/p/keypairs", "u:p", Some(&json!({"keypair": {"name": "a.b"}}))).await;
    bad_name.assert_error(
        400,
        "KPS.1101",
        "Invalid input for field/attribute name. Value: a.b. 'a.b' does not match '^[A-Za-z0-9_-]{1,64}$'",
    );
}
