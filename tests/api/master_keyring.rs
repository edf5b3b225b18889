//! The master keyring against the verifiers the store records (interface.md, "Replicated store", applied to
//! sled): the real binary refuses to start with a missing or replaced `master.key`, never creating a new one
//! for a store that has used one.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::binary::Server;
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY};

fn escrow(server: &Server, name: &str) {
    let body = json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "default"}}}});
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v3/p/keypairs", server.url))
        .header("x-auth-token", "u:p")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("create");
    assert_eq!(response.status(), 200);
}

fn current_id(keyring: &Path) -> String {
    let text = std::fs::read_to_string(keyring).expect("keyring");
    text.lines().find_map(|l| l.strip_prefix("current = ")).expect("current").trim_matches('"').to_owned()
}

/// The verifiers recorded in the (stopped) server's store, by id.
fn recorded(data: &Path) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let store = kps::store::sled::SledStore::open(&data.join("db")).expect("store");
    let recorded = runtime.block_on(kps::service::master_keys::recorded_verifiers(&store)).expect("verifiers");
    recorded.into_keys().collect()
}

#[test]
fn a_new_data_dir_gets_a_keyring_whose_verifier_the_store_records() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    assert!(server.stop().success());
    assert_eq!(recorded(&data), [current_id(&data.join("master.key"))]);
}

#[test]
fn a_missing_keyring_refuses_to_start_and_is_not_recreated() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    escrow(&server, "kept");
    assert!(server.stop().success());
    let keyring = data.join("master.key");
    let id = current_id(&keyring);
    let original = std::fs::read(&keyring).expect("read");

    std::fs::rename(&keyring, data.join("master.key.misnamed")).expect("misname");
    let stderr = crate::binary::refused_start(&data, &[]);
    assert!(stderr.contains("does not exist") && stderr.contains(&id), "{stderr}");
    assert!(!keyring.exists(), "no new keyring was created");

    // Back in place, kps starts and the escrow opens.
    std::fs::write(&keyring, original).expect("restore");
    std::fs::set_permissions(&keyring, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let server = Server::start(&data);
    let exported = reqwest::blocking::Client::new()
        .post(format!("{}/v3/p/keypairs/private-key/export", server.url))
        .header("x-auth-token", "u:p")
        .header("content-type", "application/json")
        .body(json!({"keypair": {"name": "kept"}}).to_string())
        .send()
        .expect("export");
    assert_eq!(exported.status(), 200);
    assert!(server.stop().success());
}

#[test]
fn other_key_bytes_under_a_recorded_id_refuse_to_start_naming_the_id() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    assert!(server.stop().success());
    let keyring = data.join("master.key");
    let id = current_id(&keyring);
    let text = std::fs::read_to_string(&keyring).expect("read");
    let hex = text.lines().find_map(|l| l.strip_prefix("key_hex = ")).expect("key_hex").trim_matches('"');
    let first = if hex.starts_with('0') { '1' } else { '0' };
    let flipped = format!("{first}{}", &hex[1..]);
    std::fs::write(&keyring, text.replace(hex, &flipped)).expect("replace the key bytes");
    let stderr = crate::binary::refused_start(&data, &[]);
    assert!(stderr.contains(&format!("other key bytes under master keys {id} ")), "{stderr}");
    assert!(!stderr.contains(hex) && !stderr.contains(&flipped), "never the key");
}

#[test]
fn master_key_generate_then_restart_records_the_new_key() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    escrow(&server, "before");
    assert!(server.stop().success());
    let first = current_id(&data.join("master.key"));
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["master-key", "generate", "--data-dir"])
        .arg(&data)
        .output()
        .expect("generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = current_id(&data.join("master.key"));
    assert_ne!(first, second);
    let server = Server::start(&data);
    escrow(&server, "after");
    assert!(server.stop().success());
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(recorded(&data), expected);
}

/// Deletes every verifier from the (stopped) server's store: a store written before verifiers existed.
fn forget_verifiers(data: &Path) {
    use kps::store::{Space, Store, WriteOp};
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let store = kps::store::sled::SledStore::open(&data.join("db")).expect("store");
    runtime.block_on(async {
        let prefix = kps::service::repo::layout::master_key_verifier_prefix();
        let recorded = store.scan(Space::Meta, prefix, None, usize::MAX).await.expect("scan");
        assert!(!recorded.is_empty());
        let ops =
            recorded.into_iter().map(|(key, expected)| WriteOp::Delete { space: Space::Meta, key, expected }).collect();
        store.apply(ops).await.expect("delete the verifiers");
        store.flush().await.expect("flush");
    });
}

/// A store from before verifiers, with an escrowed key: a keyring with the same id (ids are dates, so one
/// recreated the same day has it) but other bytes is refused, naming the id, and nothing is recorded; the
/// right keyring starts and has its verifier recorded. (Before, matching ids were enough.)
#[test]
fn a_store_from_before_verifiers_refuses_a_keyring_whose_bytes_do_not_open_its_escrows() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let server = Server::start(&data);
    escrow(&server, "kept");
    assert!(server.stop().success());
    forget_verifiers(&data);
    assert!(recorded(&data).is_empty());
    let keyring = data.join("master.key");
    let id = current_id(&keyring);
    let original = std::fs::read_to_string(&keyring).expect("read");
    let hex = original.lines().find_map(|l| l.strip_prefix("key_hex = ")).expect("key_hex").trim_matches('"');
    let first = if hex.starts_with('0') { '1' } else { '0' };
    std::fs::write(&keyring, original.replace(hex, &format!("{first}{}", &hex[1..]))).expect("other bytes");

    let stderr = crate::binary::refused_start(&data, &[]);
    assert!(stderr.contains(&format!("other key bytes under master keys {id} than sealed")), "{stderr}");
    assert!(recorded(&data).is_empty(), "no verifier recorded for the wrong keyring");

    std::fs::write(&keyring, original).expect("the right keyring back");
    let server = Server::start(&data);
    assert!(server.stop().success());
    assert_eq!(recorded(&data), [id]);
}
