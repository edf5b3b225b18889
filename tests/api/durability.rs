//! Durability of the real binary: acknowledged writes survive SIGKILL, and backups round-trip.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rand::Rng;

use crate::binary::Server;

/// A distinct, valid `ssh-ed25519` public key line for `seed`.
fn ed25519_public_key(seed: u64) -> String {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_be_bytes());
    let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
    let mut blob = Vec::new();
    for field in [b"ssh-ed25519".as_slice(), public.as_bytes().as_slice()] {
        blob.extend_from_slice(&u32::try_from(field.len()).expect("len").to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!("ssh-ed25519 {}", base64::engine::general_purpose::STANDARD.encode(blob))
}

fn import(client: &reqwest::blocking::Client, url: &str, name: &str, public_key: &str) -> Option<String> {
    let body = serde_json::json!({"keypair": {"name": name, "public_key": public_key}}).to_string();
    let response = client
        .post(format!("{url}/v2.1/os-keypairs"))
        .header("x-auth-token", "crash:p")
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: serde_json::Value = response.json().ok()?;
    body["keypair"]["fingerprint"].as_str().map(str::to_owned)
}

#[test]
fn every_acknowledged_import_survives_sigkill() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    std::fs::write(parent.path().join("kps.toml"), "[quota]\nkey_pairs = -1\n").expect("config");
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut seed = 0u64;

    for round in 0..3 {
        let server = Server::start_with_config(&data, &parent.path().join("kps.toml"));
        let url = server.url.clone();
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let (url, acknowledged) = (url.clone(), Arc::clone(&acknowledged));
                let first_seed = seed + writer * 1_000_000;
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    for i in 0..100_000u64 {
                        let name = format!("r{round}-w{writer}-{i}");
                        match import(&client, &url, &name, &ed25519_public_key(first_seed + i)) {
                            Some(fingerprint) => acknowledged.lock().expect("lock").push((name, fingerprint)),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        seed += 100_000_000;
        std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(300..1200)));
        server.kill();
        for writer in writers {
            writer.join().expect("writer");
        }
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 24, "too few writes to mean anything: {}", acknowledged.len());
    let server = Server::start_with_config(&data, &parent.path().join("kps.toml"));
    let client = reqwest::blocking::Client::new();
    let mut lost = Vec::new();
    for (name, fingerprint) in &acknowledged {
        let shown = client
            .get(format!("{}/v2.1/os-keypairs/{name}", server.url))
            .header("x-auth-token", "crash:p")
            .send()
            .expect("show");
        let body: serde_json::Value = shown.json().expect("json");
        if body["keypair"]["fingerprint"].as_str() != Some(fingerprint) {
            lost.push(name.clone());
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged imports lost: {lost:?}", lost.len(), acknowledged.len());
    assert!(server.stop().success());
}

fn kps(args: &[&str], data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("KPS_LOG", "warn")
        .output()
        .expect("run kps")
}

/// The backup lines after the header (whose `created_at` differs between exports).
fn records(file: &std::path::Path) -> String {
    std::fs::read_to_string(file).expect("backup").lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn backup_exports_online_and_offline_and_imports_into_a_wiped_store() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    let client = reqwest::blocking::Client::new();
    for i in 0..30 {
        assert!(import(&client, &server.url, &format!("k{i}"), &ed25519_public_key(i)).is_some());
    }

    // Online: the running server holds the lock, so the command goes through the admin API.
    let online = parent.path().join("online.jsonl");
    let denied =
        kps(&["backup", "export", online.to_str().expect("path"), "--url", &server.url, "--token", "u:p"], &data);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("kps:admin:backup"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(!online.exists(), "a failed export leaves no file");
    let out = kps(
        &["backup", "export", online.to_str().expect("path"), "--url", &server.url, "--token", "root:p:admin"],
        &data,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = kps(&["backup", "import", online.to_str().expect("path")], &data);
    assert!(!refused.status.success(), "import needs the server stopped");
    assert!(server.stop().success());

    // Offline: the same records.
    let offline = parent.path().join("offline.jsonl");
    let out = kps(&["backup", "export", offline.to_str().expect("path")], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(records(&online), records(&offline));
    let header: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&offline).expect("read").lines().next().expect("header"))
            .expect("json");
    assert_eq!(header["format_version"], 1);
    assert!(header["next_id"].as_u64().is_some_and(|n| n > 30));

    // Wipe, import, export again: every record comes back identical. The keyring is restored with it (the
    // backup carries its verifier: a new keyring would be refused).
    let keyring = std::fs::read(data.join("master.key")).expect("keyring");
    std::fs::remove_dir_all(&data).expect("wipe");
    let out = kps(&["backup", "import", offline.to_str().expect("path")], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(data.join("master.key"), keyring).expect("restore the keyring");
    std::fs::set_permissions(data.join("master.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let again = parent.path().join("again.jsonl");
    assert!(kps(&["backup", "export", again.to_str().expect("path")], &data).status.success());
    assert_eq!(records(&again), records(&offline));
    let refused = kps(&["backup", "import", offline.to_str().expect("path")], &data);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(kps(&["backup", "import", "--force", offline.to_str().expect("path")], &data).status.success());

    // Ids continue after the imported ones.
    let server = Server::start(&data);
    assert!(import(&client, &server.url, "after", &ed25519_public_key(999)).is_some());
    let shown: serde_json::Value = client
        .get(format!("{}/v2.1/os-keypairs/after", server.url))
        .header("x-auth-token", "crash:p")
        .send()
        .expect("show")
        .json()
        .expect("json");
    assert!(shown["keypair"]["id"].as_u64() >= header["next_id"].as_u64());
    assert!(server.stop().success());
}
