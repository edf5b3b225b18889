//! `kps rewrap` and `POST /admin/v1/rewrap`: re-sealing escrowed keys after a master-key rotation and onto a
//! KMS key, without changing what export returns.

use std::process::Command;

use serde_json::{Value, json};

use crate::binary::Server;
use crate::kms::{ESCROW_ID, KmsMock};
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, Kps, RSA_PRIVATE_KEY, RSA_PUBLIC_KEY};

fn escrow_body(name: &str, public_key: &str, private_key: &str) -> String {
    json!({"keypair": {"name": name, "public_key": public_key.trim_end(),
        "key_protection": {"private_key": private_key, "encryption": {"type": "default"}}}})
    .to_string()
}

fn kps_cli(args: &[&str], data: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("KPS_LOG", "warn")
        .output()
        .expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

fn export(url: &str, name: &str) -> Value {
    reqwest::blocking::Client::new()
        .post(format!("{url}/v3/p/keypairs/private-key/export"))
        .header("x-auth-token", "u:p")
        .header("content-type", "application/json")
        .body(json!({"keypair": {"name": name}}).to_string())
        .send()
        .expect("export")
        .json()
        .expect("json")
}

#[test]
fn rewrap_moves_old_master_key_records_to_the_current_key_offline_and_online() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    let client = reqwest::blocking::Client::new();
    for (name, public_key, private_key) in
        [("ed", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY), ("rsa", RSA_PUBLIC_KEY, RSA_PRIVATE_KEY)]
    {
        let response = client
            .post(format!("{}/v3/p/keypairs", server.url))
            .header("x-auth-token", "u:p")
            .header("content-type", "application/json")
            .body(escrow_body(name, public_key, private_key))
            .send()
            .expect("create");
        assert_eq!(response.status(), 200);
    }
    assert!(server.stop().success());

    kps_cli(&["master-key", "generate"], &data);
    assert_eq!(kps_cli(&["rewrap", "--dry-run"], &data).trim(), "would re-seal 2 of 2 escrowed private keys");
    assert_eq!(kps_cli(&["rewrap"], &data).trim(), "re-sealed 2 of 2 escrowed private keys");
    assert_eq!(kps_cli(&["rewrap"], &data).trim(), "re-sealed 0 of 2 escrowed private keys");

    // Online: another rotation, then the command goes through the running server's admin API.
    kps_cli(&["master-key", "generate"], &data);
    let server = Server::start(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["rewrap", "--url", &server.url, "--token", "u:p", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a non-admin is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kps:admin:rewrap"));
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["rewrap", "--url", &server.url, "--token", "root:p:admin", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "re-sealed 2 of 2 escrowed private keys");
    assert_eq!(export(&server.url, "ed")["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    assert_eq!(export(&server.url, "rsa")["keypair"]["private_key"], RSA_PRIVATE_KEY);
    assert!(server.stop().success());
}

/// A backup line's sealed key with its binary fields re-encoded as sealed format 1 wrote them (hex).
fn as_sealed_format_1(line: &str) -> String {
    use base64::Engine;
    let mut record: Value = serde_json::from_str(line).expect("backup line");
    let sealed = record.pointer_mut("/record/sealed").expect("an escrow record");
    assert_eq!(sealed["format_version"], 2);
    sealed["format_version"] = json!(1);
    for field in ["salt", "wrapped_dek", "nonce", "ciphertext"] {
        let text = sealed[field].as_str().expect("field");
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).expect("base64");
        sealed[field] = json!(hex::encode(bytes));
    }
    record.to_string()
}

#[test]
fn records_sealed_in_format_1_still_export_and_rewrap_moves_them_to_format_2() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v3/p/keypairs", server.url))
        .header("x-auth-token", "u:p")
        .header("content-type", "application/json")
        .body(escrow_body("ed", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY))
        .send()
        .expect("create");
    assert_eq!(response.status(), 200);
    assert!(server.stop().success());

    // The store as a kps that wrote format 1 would have left it (same master key, same record id).
    let backup = parent.path().join("backup.jsonl");
    kps_cli(&["backup", "export", backup.to_str().expect("utf8")], &data);
    let text = std::fs::read_to_string(&backup).expect("backup");
    let old: Vec<String> = text
        .lines()
        .map(|line| if line.contains("\"sealed\"") { as_sealed_format_1(line) } else { line.into() })
        .collect();
    assert_eq!(old.iter().filter(|line| line.contains("\"format_version\":1")).count(), 2, "header + the record");
    std::fs::write(&backup, old.join("\n") + "\n").expect("write");
    kps_cli(&["backup", "import", backup.to_str().expect("utf8"), "--force"], &data);

    let server = Server::start(&data);
    assert_eq!(export(&server.url, "ed")["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    assert!(server.stop().success());
    assert_eq!(kps_cli(&["rewrap"], &data).trim(), "re-sealed 1 of 1 escrowed private keys");
    assert_eq!(kps_cli(&["rewrap"], &data).trim(), "re-sealed 0 of 1 escrowed private keys");
    kps_cli(&["backup", "export", backup.to_str().expect("utf8")], &data);
    let text = std::fs::read_to_string(&backup).expect("backup");
    let record: Value =
        serde_json::from_str(text.lines().find(|l| l.contains("\"sealed\"")).expect("record")).expect("json");
    assert_eq!(record["record"]["sealed"]["format_version"], 2);
    let server = Server::start(&data);
    assert_eq!(export(&server.url, "ed")["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_onto_a_kms_key_and_back() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    let create = kps
        .nova(
            "POST",
            "/v2.1/os-keypairs",
            "u:p",
            None,
            Some(&escrow_body("ed", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY)),
        )
        .await;
    assert_eq!(create.status, 200);
    let headers = [("x-auth-token", "root:p:admin"), ("content-type", "application/json")];
    let moved = kps.call("POST", "/admin/v1/rewrap", &headers, Some(r#"{"to_kms_key": "kps-escrow"}"#)).await;
    assert_eq!(
        moved.json(),
        json!({"escrowed": 1, "rewrapped": 1, "dry_run": false}),
        "{}",
        String::from_utf8_lossy(&moved.body)
    );
    let show = kps.call("GET", "/v3/p/keypairs/ed", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(show.json()["keypair"]["key_id"], ESCROW_ID);
    let export = kps
        .call(
            "POST",
            "/v3/p/keypairs/private-key/export",
            &[("x-auth-token", "u:p"), ("content-type", "application/json")],
            Some(r#"{"keypair": {"name": "ed"}}"#),
        )
        .await;
    assert_eq!(export.json()["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    let back = kps.call("POST", "/admin/v1/rewrap", &headers, Some(r#"{"to_default": true}"#)).await;
    assert_eq!(back.json()["rewrapped"], 1);
    let show = kps.call("GET", "/v3/p/keypairs/ed", &[("x-auth-token", "u:p")], None).await;
    assert!(show.json()["keypair"].get("key_id").is_none());
    let bad = kps.call("POST", "/admin/v1/rewrap", &headers, Some(r#"{"to_default": true, "to_kms_key": "x"}"#)).await;
    assert_eq!(bad.json()["error_code"], "KPS.1001");
    let unknown = kps.call("POST", "/admin/v1/rewrap", &headers, Some(r#"{"to_kms_key": "nope"}"#)).await;
    assert_eq!(unknown.json()["error_code"], "KPS.1802");
}
