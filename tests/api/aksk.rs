//! `auth.mode = aksk` through the API (interface.md "Authentication modes", kms-huawei.md §2.2, errors.md
//! §3.11): requests signed with the client side of `kps::signing` (the same algorithm as huaweicloudsdkcore),
//! the 2001/2002/2004 split, tampering, and the credentials file rules through the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kps::config::AuthMode;
use kps::signing::{self, Credentials, SignedRequest};
use secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;

use super::binary::{Server, free_port};
use super::{Answer, ED25519_VECTOR, Kps};

const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "ExampleSecretKey0000000000000000000000001";
const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const ADMIN_AK: &str = "HPUAEXAMPLEADMIN0001";
const ADMIN_SK: &str = "AdminSecretKey";
/// The `Host` that `Kps::call` sends.
const HOST: &str = "kps.test:8774";
const JSON_TYPE: &str = "application/json;charset=UTF-8";

const MISSING: &str = "Authentication required";
const INVALID: &str = "Invalid authentication credentials";
const EXPIRED: &str = "Request signature expired or X-Sdk-Date missing";

fn credentials_file(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join("credentials.toml");
    let text = format!(
        "[[credentials]]\nak = \"{AK}\"\nsk = \"{SK}\"\nuser_id = \"u-1001\"\nproject_id = \"{PROJECT}\"\n\
         roles = [\"member\"]\n\n\
         [[credentials]]\nak = \"{ADMIN_AK}\"\nsk = \"{ADMIN_SK}\"\nuser_id = \"root\"\nproject_id = \"p-0\"\n\
         roles = [\"admin\"]\n"
    );
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn aksk_kps(dir: &Path) -> Kps {
    let file = credentials_file(dir, 0o600);
    Kps::with_config(|c| {
        c.auth.mode = AuthMode::Aksk;
        c.auth.credentials_file = Some(file);
    })
}

/// What the Huawei SDK would send: `Content-Type`, `X-Project-Id` and the signature headers, signed with
/// `Host: kps.test:8774` over `uri` (path and query, raw) and `body` at time `at`.
fn sdk_headers(method: &str, uri: &str, body: &str, ak: &str, sk: &str, at: OffsetDateTime) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut headers = vec![
        ("Content-Type".to_owned(), JSON_TYPE.to_owned()),
        ("Host".to_owned(), HOST.to_owned()),
        ("User-Agent".to_owned(), "huaweicloud-usdk-python/3.0".to_owned()),
    ];
    if ak == AK {
        headers.push(("X-Project-Id".to_owned(), PROJECT.to_owned()));
    }
    let request = SignedRequest { method, path, query, headers: &headers, body: body.as_bytes() };
    let signature = signing::sign(&request, &Credentials::new(ak, SecretString::from(sk)), at);
    // `Kps::call` adds the Host header itself.
    headers.retain(|(name, _)| name != "Host");
    headers.push(("X-Sdk-Date".to_owned(), signature.sdk_date));
    headers.push(("Authorization".to_owned(), signature.authorization));
    headers
}

async fn send(kps: &Kps, method: &str, uri: &str, headers: &[(String, String)], body: &str) -> Answer {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    kps.call(method, uri, &headers, (!body.is_empty()).then_some(body)).await
}

/// Signs as the SDK would and sends exactly that.
async fn signed(kps: &Kps, method: &str, uri: &str, body: &str) -> Answer {
    let headers = sdk_headers(method, uri, body, AK, SK, OffsetDateTime::now_utc());
    send(kps, method, uri, &headers, body).await
}

fn import_body(name: &str) -> String {
    json!({"keypair": {"name": name, "public_key": ED25519_VECTOR}}).to_string()
}

#[tokio::test]
async fn signed_requests_act_as_the_credential_caller_on_both_apis() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = aksk_kps(secrets.path());
    let created = signed(&kps, "POST", &format!("/v3/{PROJECT}/keypairs"), &import_body("v3-key")).await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(created.json()["keypair"]["user_id"], "u-1001");

    let nova = signed(&kps, "POST", &format!("/v2.1/{PROJECT}/os-keypairs"), &import_body("nova key")).await;
    assert_eq!(nova.status, 200, "{}", String::from_utf8_lossy(&nova.body));

    // A query (in any order, percent-encoded) is part of what is signed.
    let listed = signed(&kps, "GET", &format!("/v3/{PROJECT}/keypairs?marker=nova%20key&limit=5"), "").await;
    assert_eq!(listed.status, 200, "{}", String::from_utf8_lossy(&listed.body));
    assert_eq!(listed.json()["keypairs"][0]["keypair"]["name"], "v3-key");
    // A percent-encoded path segment.
    let shown = signed(&kps, "GET", &format!("/v2.1/{PROJECT}/os-keypairs/nova%20key"), "").await;
    assert_eq!(shown.json()["keypair"]["user_id"], "u-1001");

    // The URL's project must still be the credential's (Nova behaviour, 400 KPS.1005).
    let elsewhere = signed(&kps, "GET", "/v3/p-other/keypairs", "").await;
    assert_eq!(elsewhere.json()["error_code"], "KPS.1005");

    // Roles come from the credentials file: the admin credential may back up.
    let headers = sdk_headers("POST", "/admin/v1/backup", "", ADMIN_AK, ADMIN_SK, OffsetDateTime::now_utc());
    assert_eq!(send(&kps, "POST", "/admin/v1/backup", &headers, "").await.status, 200);
    let member = signed(&kps, "POST", "/admin/v1/backup", "").await;
    assert_eq!(member.json()["error_code"], "KPS.2003");

    let deleted = signed(&kps, "DELETE", &format!("/v3/{PROJECT}/keypairs/v3-key"), "").await;
    assert_eq!(deleted.status, 204, "{}", String::from_utf8_lossy(&deleted.body));
}

#[tokio::test]
async fn missing_and_token_credentials_are_2001() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = aksk_kps(secrets.path());
    let uri = format!("/v3/{PROJECT}/keypairs");
    kps.call("GET", &uri, &[], None).await.assert_error(401, "KPS.2001", MISSING);
    // X-Auth-Token is not a credential in this mode, whatever its form.
    for token in ["u-1001:0a1b2c3d4e5f60718293a4b5c6d7e8f9", AK, SK] {
        kps.call("GET", &uri, &[("x-auth-token", token)], None).await.assert_error(401, "KPS.2001", MISSING);
    }
    // Authentication comes before routing: an unrouted API path says the same.
    kps.call("GET", "/v3/nowhere", &[], None).await.assert_error(401, "KPS.2001", MISSING);
    // Unauthenticated paths stay open.
    assert_eq!(kps.call("GET", "/healthz", &[], None).await.status, 200);
}

#[tokio::test]
async fn malformed_authorization_and_unknown_access_keys_are_2002() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = aksk_kps(secrets.path());
    let uri = format!("/v3/{PROJECT}/keypairs");
    let good = sdk_headers("GET", &uri, "", AK, SK, OffsetDateTime::now_utc());
    let authorization = good.iter().find(|(n, _)| n == "Authorization").expect("signed").1.clone();
    let with_authorization = |value: &str| {
        let mut headers = good.clone();
        headers.retain(|(n, _)| n != "Authorization");
        headers.push(("Authorization".to_owned(), value.to_owned()));
        headers
    };
    for bad in [
        "Bearer abc".to_owned(),
        "SDK-HMAC-SHA256".to_owned(),
        authorization.replace("SDK-HMAC-SHA256", "SDK-HMAC-SM3"),
        authorization.replace("SignedHeaders=", "Headers="),
        authorization.replace(";host;", ";"),
        authorization.replace(", Signature=", ", Signature=, X="),
    ] {
        send(&kps, "GET", &uri, &with_authorization(&bad), "").await.assert_error(401, "KPS.2002", INVALID);
    }
    // An AK the file does not know, signed with any SK.
    let unknown = sdk_headers("GET", &uri, "", "HPUAUNKNOWNAK0000001", SK, OffsetDateTime::now_utc());
    send(&kps, "GET", &uri, &unknown, "").await.assert_error(401, "KPS.2002", INVALID);
    // A known AK with the wrong SK.
    let wrong_sk = sdk_headers("GET", &uri, "", AK, "not-the-secret", OffsetDateTime::now_utc());
    send(&kps, "GET", &uri, &wrong_sk, "").await.assert_error(401, "KPS.2002", INVALID);
    // An X-Project-Id other than the credential's project.
    let mut other_project = good.clone();
    other_project.retain(|(n, _)| n != "X-Project-Id");
    other_project.push(("X-Project-Id".to_owned(), "p-other".to_owned()));
    send(&kps, "GET", &uri, &other_project, "").await.assert_error(401, "KPS.2002", INVALID);
}

#[tokio::test]
async fn tampered_body_query_path_or_method_is_2002() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = aksk_kps(secrets.path());
    let now = OffsetDateTime::now_utc();
    let create = format!("/v3/{PROJECT}/keypairs");
    let body = import_body("k");
    let headers = sdk_headers("POST", &create, &body, AK, SK, now);
    let tampered_body = import_body("evil");
    send(&kps, "POST", &create, &headers, &tampered_body).await.assert_error(401, "KPS.2002", INVALID);
    send(&kps, "PUT", &create, &headers, &body).await.assert_error(401, "KPS.2002", INVALID);

    let list = format!("/v3/{PROJECT}/keypairs?limit=1");
    let headers = sdk_headers("GET", &list, "", AK, SK, now);
    let other_query = format!("/v3/{PROJECT}/keypairs?limit=2");
    send(&kps, "GET", &other_query, &headers, "").await.assert_error(401, "KPS.2002", INVALID);
    let added_query = format!("{list}&marker=a");
    send(&kps, "GET", &added_query, &headers, "").await.assert_error(401, "KPS.2002", INVALID);

    let show = format!("/v3/{PROJECT}/keypairs/a");
    let headers = sdk_headers("GET", &show, "", AK, SK, now);
    let other_path = format!("/v3/{PROJECT}/keypairs/b");
    send(&kps, "GET", &other_path, &headers, "").await.assert_error(401, "KPS.2002", INVALID);

    // A signed header changed after signing (the SDK signs User-Agent too).
    let mut changed = sdk_headers("GET", &show, "", AK, SK, now);
    for (name, value) in &mut changed {
        if name == "User-Agent" {
            *value = "curl/8".to_owned();
        }
    }
    send(&kps, "GET", &show, &changed, "").await.assert_error(401, "KPS.2002", INVALID);
    // The untampered request still works (so the refusals above were about the tampering).
    assert_eq!(send(&kps, "POST", &create, &sdk_headers("POST", &create, &body, AK, SK, now), &body).await.status, 200);
}

/// Issue 11.1: a captured signed request replayed with another body, with or without an
/// `X-Sdk-Content-Sha256` header claiming the captured body's hash, is refused (kms-huawei.md §2.2 step 4).
#[tokio::test]
async fn a_captured_export_does_not_carry_another_body() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = aksk_kps(secrets.path());
    let create = format!("/v3/{PROJECT}/keypairs");
    for name in ["mine", "theirs"] {
        let body = json!({"keypair": {"name": name, "key_protection": {"encryption": {"type": "default"}}}});
        let created = signed(&kps, "POST", &create, &body.to_string()).await;
        assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    }
    let export = format!("/v3/{PROJECT}/keypairs/private-key/export");
    let captured_body = json!({"keypair": {"name": "mine"}}).to_string();
    let captured = sdk_headers("POST", &export, &captured_body, AK, SK, OffsetDateTime::now_utc());
    let replayed_body = json!({"keypair": {"name": "theirs"}}).to_string();
    let captured_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(captured_body.as_bytes()));

    send(&kps, "POST", &export, &captured, &replayed_body).await.assert_error(401, "KPS.2002", INVALID);
    for claimed in [captured_hash.as_str(), signing::UNSIGNED_PAYLOAD] {
        let mut forged = captured.clone();
        forged.push((signing::CONTENT_SHA256_HEADER.to_owned(), claimed.to_owned()));
        send(&kps, "POST", &export, &forged, &replayed_body).await.assert_error(401, "KPS.2002", INVALID);
    }
    // The captured request as it was is valid: only the body swap was refused.
    let exported = send(&kps, "POST", &export, &captured, &captured_body).await;
    assert_eq!(exported.status, 200, "{}", String::from_utf8_lossy(&exported.body));
    assert!(exported.json()["keypair"]["private_key"].as_str().is_some_and(|k| k.contains("PRIVATE KEY")));
}

#[tokio::test]
async fn a_missing_or_stale_x_sdk_date_is_2004() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = aksk_kps(secrets.path());
    let uri = format!("/v3/{PROJECT}/keypairs");
    let now = OffsetDateTime::now_utc();
    let mut no_date = sdk_headers("GET", &uri, "", AK, SK, now);
    no_date.retain(|(n, _)| n != "X-Sdk-Date");
    send(&kps, "GET", &uri, &no_date, "").await.assert_error(401, "KPS.2004", EXPIRED);

    let mut bad_date = sdk_headers("GET", &uri, "", AK, SK, now);
    for (name, value) in &mut bad_date {
        if name == "X-Sdk-Date" {
            *value = "2026-11-23T19:30:00Z".to_owned();
        }
    }
    send(&kps, "GET", &uri, &bad_date, "").await.assert_error(401, "KPS.2004", EXPIRED);

    for skew in [time::Duration::minutes(16), time::Duration::minutes(-16)] {
        let headers = sdk_headers("GET", &uri, "", AK, SK, now + skew);
        send(&kps, "GET", &uri, &headers, "").await.assert_error(401, "KPS.2004", EXPIRED);
    }
    // Within 15 minutes either way it is accepted.
    for skew in [time::Duration::minutes(14), time::Duration::minutes(-14)] {
        let headers = sdk_headers("GET", &uri, "", AK, SK, now + skew);
        assert_eq!(send(&kps, "GET", &uri, &headers, "").await.status, 200);
    }
}

// -------------------------------------------------------------------------------------------------------
// the real binary

/// `kps serve --auth aksk` with an empty config file and `env`; returns once it has exited.
fn run_binary(dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kps"));
    command
        .args(["serve", "--auth", "aksk", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(dir.join("data"))
        .env("KPS_CONFIG", config)
        .env_remove("KPS_AUTH_CREDENTIALS_FILE")
        .env_remove("KPS_SECRETS_ALLOW_GROUP_READABLE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run kps")
}

#[test]
fn the_binary_refuses_a_readable_or_missing_credentials_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (mode, allow_group) in [(0o644, "false"), (0o604, "true"), (0o640, "false"), (0o660, "true")] {
        let file = credentials_file(dir.path(), mode);
        let out = run_binary(
            dir.path(),
            &[
                ("KPS_AUTH_CREDENTIALS_FILE", file.to_str().expect("utf-8 path")),
                ("KPS_SECRETS_ALLOW_GROUP_READABLE", allow_group),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode:o} allow_group={allow_group} started");
        assert!(stderr.contains("credentials.toml") && stderr.contains(&format!("{mode:04o}")), "{stderr}");
        assert!(!stderr.contains(SK) && !stderr.contains(ADMIN_SK), "secrets in the error: {stderr}");
    }
    let out = run_binary(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("auth.credentials_file"), "{stderr}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, format!("[[credentials]]\nak = \"{AK}\"\nsk = \"{SK}\"\n")).expect("write");
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run_binary(dir.path(), &[("KPS_AUTH_CREDENTIALS_FILE", broken.to_str().expect("utf-8 path"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("broken.toml"), "{stderr}");
    assert!(!stderr.contains(SK), "the SK must not appear in the error: {stderr}");
}

#[test]
fn the_binary_serves_signed_requests_with_a_private_credentials_file() {
    for (mode, allow_group) in [(0o600, false), (0o400, false), (0o440, true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = credentials_file(dir.path(), mode);
        let config = dir.path().join("kps.toml");
        let text = format!(
            "[auth]\nmode = \"aksk\"\ncredentials_file = \"{}\"\n[secrets]\nallow_group_readable = {allow_group}\n",
            file.display()
        );
        std::fs::write(&config, text).expect("write config");
        let server = Server::start_with_config(&dir.path().join("data"), &config);
        let host = server.url.trim_start_matches("http://").to_owned();
        let path = format!("/v3/{PROJECT}/keypairs");
        let body = import_body("k");
        let mut headers = vec![
            ("Content-Type".to_owned(), JSON_TYPE.to_owned()),
            ("Host".to_owned(), host.clone()),
            ("X-Project-Id".to_owned(), PROJECT.to_owned()),
        ];
        let request =
            SignedRequest { method: "POST", path: &path, query: "", headers: &headers, body: body.as_bytes() };
        let signature =
            signing::sign(&request, &Credentials::new(AK, SecretString::from(SK)), OffsetDateTime::now_utc());
        headers.push(("X-Sdk-Date".to_owned(), signature.sdk_date));
        headers.push(("Authorization".to_owned(), signature.authorization));
        let client = reqwest::blocking::Client::new();
        let mut builder = client.post(format!("{}{path}", server.url)).body(body.clone());
        for (name, value) in &headers {
            // reqwest sends `Host: 127.0.0.1:<port>` itself, exactly what was signed.
            if name != "Host" {
                builder = builder.header(name, value);
            }
        }
        let response = builder.send().expect("request");
        assert_eq!(response.status(), 200, "{mode:o}: {:?}", response.text());
        let unsigned = client.get(format!("{}{path}", server.url)).send().expect("request");
        assert_eq!(unsigned.status(), 401);
        let body: serde_json::Value = unsigned.json().expect("json");
        assert_eq!(body["error_code"], "KPS.2001");
        assert!(server.stop().success());
    }
}
