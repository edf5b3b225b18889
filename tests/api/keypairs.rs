//! Create, import, show and delete through the API, per microversion (nova-keypairs.md §6), with
//! generated keys checked by an independent implementation (OpenSSH's `ssh-keygen`, OpenSSL).

use std::io::Write;
use std::process::Command;

use serde_json::{Value, json};

use crate::{ED25519_VECTOR, ED25519_VECTOR_FINGERPRINT, Kps};

fn body(keypair: Value) -> String {
    json!({ "keypair": keypair }).to_string()
}

/// Runs `ssh-keygen` on a private key: returns (derived public key "algo blob", md5 fingerprint).
fn ssh_keygen_view(private_key: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("id");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(private_key.as_bytes()).expect("write");
    drop(file);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let public = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path).output().expect("ssh-keygen -y");
    assert!(public.status.success(), "ssh-keygen -y: {}", String::from_utf8_lossy(&public.stderr));
    let public = String::from_utf8(public.stdout).expect("utf8");
    let mut fields = public.split_whitespace();
    let derived = format!("{} {}", fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    let pub_path = dir.path().join("id.pub");
    std::fs::write(&pub_path, &public).expect("write pub");
    let fp = Command::new("ssh-keygen").args(["-l", "-E", "md5", "-f"]).arg(&pub_path).output().expect("ssh-keygen -l");
    let fp = String::from_utf8(fp.stdout).expect("utf8");
    let md5 = fp.split_whitespace().nth(1).and_then(|f| f.strip_prefix("MD5:")).unwrap_or("").to_owned();
    (derived, md5)
}

fn algo_and_blob(public_key: &str) -> String {
    public_key.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn create_at_2_1_returns_200_without_type() {
    let kps = Kps::new();
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body(json!({"name": "gen"})))).await;
    assert_eq!(answer.status, 200);
    let keypair = &answer.json()["keypair"];
    let mut keys: Vec<&str> = keypair.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["fingerprint", "name", "private_key", "public_key", "user_id"]);
    assert_eq!(keypair["user_id"], "u");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("pragma"), Some("no-cache"));
}

#[tokio::test]
async fn create_at_2_2_returns_201_and_type() {
    let kps = Kps::new();
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.2"), Some(&body(json!({"name": "gen"})))).await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.json()["keypair"]["type"], "ssh");
}

#[tokio::test]
async fn generated_rsa_key_is_pkcs1_and_matches_its_public_key_per_ssh_keygen() {
    let kps = Kps::new();
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.2"), Some(&body(json!({"name": "gen"})))).await;
    let keypair = answer.json()["keypair"].clone();
    let private_key = keypair["private_key"].as_str().expect("private key");
    assert!(private_key.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    assert!(private_key.ends_with("-----END RSA PRIVATE KEY-----\n"));
    assert!(private_key.lines().filter(|l| !l.starts_with("-----")).all(|l| l.len() <= 64));
    let public_key = keypair["public_key"].as_str().expect("public key");
    assert!(public_key.starts_with("ssh-rsa ") && public_key.ends_with(" Generated-by-Nova"), "{public_key}");
    let (derived, md5) = ssh_keygen_view(private_key);
    assert_eq!(derived, algo_and_blob(public_key));
    assert_eq!(md5, keypair["fingerprint"].as_str().expect("fingerprint"));
    // The private key is given out once: show never has it.
    let show = kps.nova("GET", "/v2.1/os-keypairs/gen", "u:p", Some("2.2"), None).await;
    assert!(show.json()["keypair"].get("private_key").is_none());
}

#[tokio::test]
async fn algorithm_extension_generates_each_algorithm() {
    let kps = Kps::new();
    let table = [
        ("ED25519", "ssh-ed25519 ", "-----BEGIN OPENSSH PRIVATE KEY-----", " Generated-by-kps"),
        ("EC_P256", "ecdsa-sha2-nistp256 ", "-----BEGIN EC PRIVATE KEY-----", " Generated-by-kps"),
        ("EC_P384", "ecdsa-sha2-nistp384 ", "-----BEGIN EC PRIVATE KEY-----", " Generated-by-kps"),
        ("RSA_3072", "ssh-rsa ", "-----BEGIN RSA PRIVATE KEY-----", " Generated-by-Nova"),
    ];
    for (algorithm, prefix, armour, comment) in table {
        let request = body(json!({"name": algorithm, "algorithm": algorithm}));
        let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.2"), Some(&request)).await;
        assert_eq!(answer.status, 201, "{algorithm}: {}", String::from_utf8_lossy(&answer.body));
        let keypair = answer.json()["keypair"].clone();
        let public_key = keypair["public_key"].as_str().expect("public key");
        let private_key = keypair["private_key"].as_str().expect("private key");
        assert!(public_key.starts_with(prefix) && public_key.ends_with(comment), "{algorithm}: {public_key}");
        assert!(private_key.starts_with(armour), "{algorithm}");
        let (derived, md5) = ssh_keygen_view(private_key);
        assert_eq!(derived, algo_and_blob(public_key), "{algorithm}");
        assert_eq!(md5, keypair["fingerprint"].as_str().expect("fingerprint"), "{algorithm}");
    }
}

#[tokio::test]
async fn generated_x509_bundle_loads_with_openssl_and_matches_the_certificate() {
    let kps = Kps::new();
    let request = body(json!({"name": "winrm", "type": "x509"}));
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u-x:p", Some("2.2"), Some(&request)).await;
    assert_eq!(answer.status, 201);
    let keypair = answer.json()["keypair"].clone();
    let certificate = keypair["public_key"].as_str().expect("certificate");
    assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    let bundle = keypair["private_key"].as_str().expect("bundle");
    assert!(!bundle.contains('\n') && !bundle.contains("-----"), "single-line base64");

    let dir = tempfile::tempdir().expect("tempdir");
    let p12 = dir.path().join("bundle.p12");
    let der = base64_decode(bundle);
    std::fs::write(&p12, der).expect("write");
    let out = Command::new("openssl")
        .args(["pkcs12", "-passin", "pass:", "-nodes", "-in"])
        .arg(&p12)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl pkcs12: {}", String::from_utf8_lossy(&out.stderr));
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(pem.contains("PRIVATE KEY-----"));
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, certificate).expect("write cert");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-fingerprint", "-sha1", "-in"])
        .arg(&cert_path)
        .output()
        .expect("openssl x509");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("Subject: CN=u-x") || text.contains("Subject: CN = u-x"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let fingerprint = text
        .lines()
        .find_map(|l| l.strip_prefix("SHA1 Fingerprint=").or_else(|| l.strip_prefix("sha1 Fingerprint=")))
        .expect("fingerprint");
    assert_eq!(fingerprint.to_lowercase(), keypair["fingerprint"].as_str().expect("fingerprint"));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

#[tokio::test]
async fn import_keeps_the_key_text_exactly_and_computes_nova_fingerprints() {
    let kps = Kps::new();
    let with_newline = format!("{ED25519_VECTOR}\r\n");
    let answer = kps
        .nova(
            "POST",
            "/v2.1/os-keypairs",
            "u:p",
            Some("2.92"),
            Some(&body(json!({"name": "ops@laptop.1", "public_key": with_newline}))),
        )
        .await;
    assert_eq!(answer.status, 201);
    let keypair = answer.json()["keypair"].clone();
    assert_eq!(
        keypair,
        json!({"name": "ops@laptop.1", "type": "ssh", "public_key": with_newline, "fingerprint": ED25519_VECTOR_FINGERPRINT, "user_id": "u"})
    );
}

#[tokio::test]
async fn generation_is_refused_at_2_92() {
    let kps = Kps::new();
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.92"), Some(&body(json!({"name": "a"})))).await;
    assert_eq!(answer.json()["error_code"], "KPS.1001");
}

#[tokio::test]
async fn show_returns_the_nova_fields() {
    let kps = Kps::new();
    kps.import("u:p", "k", ED25519_VECTOR).await;
    let answer = kps.nova("GET", "/v2.1/p/os-keypairs/k", "u:p", Some("2.2"), None).await;
    assert_eq!(answer.status, 200);
    let keypair = answer.json()["keypair"].clone();
    let keys: Vec<&str> = keypair.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "public_key",
            "fingerprint",
            "user_id",
            "type",
            "id",
            "created_at",
            "updated_at",
            "deleted",
            "deleted_at"
        ]
    );
    assert!(keypair["id"].as_u64().is_some_and(|id| id > 0));
    let created_at = keypair["created_at"].as_str().expect("created_at");
    assert_eq!(created_at.len(), 26, "{created_at}");
    assert_eq!(&created_at[10..11], "T");
    assert_eq!(&created_at[19..20], ".");
    assert_eq!(
        (keypair["updated_at"].clone(), keypair["deleted"].clone(), keypair["deleted_at"].clone()),
        (Value::Null, json!(false), Value::Null)
    );
    let at_21 = kps.nova("GET", "/v2.1/os-keypairs/k", "u:p", None, None).await;
    assert!(at_21.json()["keypair"].get("type").is_none());
}

#[tokio::test]
async fn ids_are_unique_and_not_reused() {
    let kps = Kps::new();
    kps.import("u:p", "a", ED25519_VECTOR).await;
    let first = kps.nova("GET", "/v2.1/os-keypairs/a", "u:p", None, None).await.json()["keypair"]["id"].clone();
    kps.nova("DELETE", "/v2.1/os-keypairs/a", "u:p", None, None).await;
    kps.import("u:p", "a", ED25519_VECTOR).await;
    let second = kps.nova("GET", "/v2.1/os-keypairs/a", "u:p", None, None).await.json()["keypair"]["id"].clone();
    assert_ne!(first, second);
}

#[tokio::test]
async fn names_in_paths_are_percent_decoded() {
    let kps = Kps::new();
    kps.import("u:p", "with space", ED25519_VECTOR).await;
    let answer = kps.nova("GET", "/v2.1/os-keypairs/with%20space", "u:p", None, None).await;
    assert_eq!(answer.json()["keypair"]["name"], "with space");
}

#[tokio::test]
async fn delete_is_202_at_2_1_and_204_from_2_2() {
    let kps = Kps::new();
    kps.import("u:p", "a", ED25519_VECTOR).await;
    kps.import("u:p", "b", ED25519_VECTOR).await;
    let accepted = kps.nova("DELETE", "/v2.1/os-keypairs/a", "u:p", None, None).await;
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.header("content-type"), Some("application/json"));
    assert_eq!(accepted.header("content-length"), Some("0"));
    assert!(accepted.body.is_empty());
    let no_content = kps.nova("DELETE", "/v2.1/os-keypairs/b", "u:p", Some("2.2"), None).await;
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("content-type"), Some("application/json"));
    assert!(no_content.body.is_empty());
    let again = kps.nova("DELETE", "/v2.1/os-keypairs/b", "u:p", Some("2.2"), None).await;
    again.assert_error(404, "KPS.1601", "Keypair b not found for user u");
}

#[tokio::test]
async fn duplicate_names_are_409_and_names_are_case_sensitive() {
    let kps = Kps::new();
    kps.import("u:p", "dup", ED25519_VECTOR).await;
    let request = body(json!({"name": "dup", "public_key": ED25519_VECTOR}));
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&request)).await;
    answer.assert_error(409, "KPS.1701", "Key pair 'dup' already exists.");
    kps.import("u:p", "DUP", ED25519_VECTOR).await;
    // Another user may use the same name.
    kps.import("v:p", "dup", ED25519_VECTOR).await;
}

#[tokio::test]
async fn key_pairs_belong_to_the_user_across_projects() {
    let kps = Kps::new();
    kps.import("u:p1", "mine", ED25519_VECTOR).await;
    let answer = kps.nova("GET", "/v2.1/p2/os-keypairs/mine", "u:p2", None, None).await;
    assert_eq!(answer.status, 200);
    let other = kps.nova("GET", "/v2.1/p1/os-keypairs/mine", "v:p1", None, None).await;
    other.assert_error(404, "KPS.1601", "Keypair mine not found for user v");
}

#[tokio::test]
async fn concurrent_creates_of_one_name_give_one_success_and_one_conflict() {
    let kps = std::sync::Arc::new(Kps::new());
    for round in 0..10 {
        let name = format!("race-{round}");
        let request = body(json!({"name": name, "public_key": ED25519_VECTOR}));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let kps = std::sync::Arc::clone(&kps);
                let request = request.clone();
                tokio::spawn(async move {
                    kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&request)).await.status.as_u16()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.expect("task"));
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}");
    }
}

#[tokio::test]
async fn user_id_needs_2_10_and_admin_for_other_users() {
    let kps = Kps::new();
    let for_bob = body(json!({"name": "k", "user_id": "bob", "public_key": ED25519_VECTOR}));
    let early = kps.nova("POST", "/v2.1/os-keypairs", "admin:p:admin", Some("2.9"), Some(&for_bob)).await;
    assert_eq!(early.json()["error_code"], "KPS.1001");
    let denied = kps.nova("POST", "/v2.1/os-keypairs", "alice:p", Some("2.10"), Some(&for_bob)).await;
    denied.assert_error(403, "KPS.2003", "Policy doesn't allow os_compute_api:os-keypairs:create to be performed.");
    let created = kps.nova("POST", "/v2.1/os-keypairs", "admin:p:admin", Some("2.10"), Some(&for_bob)).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["keypair"]["user_id"], "bob");
    // Empty user_id is the caller.
    let own = body(json!({"name": "own", "user_id": "", "public_key": ED25519_VECTOR}));
    let created = kps.nova("POST", "/v2.1/os-keypairs", "alice:p", Some("2.10"), Some(&own)).await;
    assert_eq!(created.json()["keypair"]["user_id"], "alice");

    let show = kps.nova("GET", "/v2.1/os-keypairs/k?user_id=bob", "admin:p:admin", Some("2.10"), None).await;
    assert_eq!(show.json()["keypair"]["user_id"], "bob");
    let show = kps.nova("GET", "/v2.1/os-keypairs/k?user_id=bob", "alice:p", Some("2.10"), None).await;
    show.assert_error(403, "KPS.2003", "Policy doesn't allow os_compute_api:os-keypairs:show to be performed.");
    let list = kps.nova("GET", "/v2.1/os-keypairs?user_id=bob", "alice:p", Some("2.10"), None).await;
    list.assert_error(403, "KPS.2003", "Policy doesn't allow os_compute_api:os-keypairs:index to be performed.");
    let list = kps.nova("GET", "/v2.1/os-keypairs?user_id=bob", "admin:p:admin", Some("2.10"), None).await;
    assert_eq!(list.json()["keypairs"][0]["keypair"]["name"], "k");
    // Before 2.10 the parameter is ignored: the admin sees its own (empty) list.
    let list = kps.nova("GET", "/v2.1/os-keypairs?user_id=bob", "admin:p:admin", Some("2.9"), None).await;
    assert_eq!(list.json()["keypairs"], json!([]));
    let delete = kps.nova("DELETE", "/v2.1/os-keypairs/k?user_id=bob", "alice:p", Some("2.10"), None).await;
    delete.assert_error(403, "KPS.2003", "Policy doesn't allow os_compute_api:os-keypairs:delete to be performed.");
    let delete = kps.nova("DELETE", "/v2.1/os-keypairs/k?user_id=bob", "admin:p:admin", Some("2.10"), None).await;
    assert_eq!(delete.status, 204);
    let gone = kps.nova("GET", "/v2.1/os-keypairs/k?user_id=bob", "admin:p:admin", Some("2.10"), None).await;
    gone.assert_error(404, "KPS.1601", "Keypair k not found for user bob");
}

#[tokio::test]
async fn unknown_query_parameters_are_400_from_2_75_on_show_and_delete() {
    let kps = Kps::new();
    kps.import("u:p", "k", ED25519_VECTOR).await;
    let ignored = kps.nova("GET", "/v2.1/os-keypairs/k?foo=1", "u:p", Some("2.74"), None).await;
    assert_eq!(ignored.status, 200);
    for method in ["GET", "DELETE"] {
        let answer = kps.nova(method, "/v2.1/os-keypairs/k?foo=1", "u:p", Some("2.75"), None).await;
        answer.assert_error(400, "KPS.1003", "Additional properties are not allowed ('foo' was unexpected)");
    }
}

/// Concurrent creates of one user at the edge of the quota: exactly the quota's worth succeed (user and
/// `domain` keys alike), whatever the interleaving; the rest are 403 KPS.1501.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_exceed_the_quota() {
    let kps = std::sync::Arc::new(Kps::with_config(|c| c.quota.key_pairs = 3));
    let creates: Vec<_> = (0..24)
        .map(|i| {
            let kps = std::sync::Arc::clone(&kps);
            tokio::spawn(async move {
                let answer = if i % 2 == 0 {
                    let body = json!({"keypair": {"name": format!("k{i}"), "public_key": ED25519_VECTOR}});
                    kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await
                } else {
                    let body = json!({"keypair": {"name": format!("d{i}"), "scope": "domain",
                        "public_key": ED25519_VECTOR}});
                    let headers = [("x-auth-token", "u:p"), ("content-type", "application/json")];
                    kps.call("POST", "/v3/p/keypairs", &headers, Some(&body.to_string())).await
                };
                answer.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for create in creates {
        statuses.push(create.await.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 21, "{statuses:?}");
}
