//! Moving a deployment from sled to PostgreSQL (interface.md, "Replicated store"): `kps backup export` from a
//! sled data directory, `kps backup import` into PostgreSQL, and a replica on PostgreSQL given the sled store's
//! keyring serves every key pair with its id, and exports every escrowed private key (`default` and `kms`,
//! through the real kms-mock) byte for byte.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::binary::Server;
use crate::kms::KmsMock;
use crate::pg::PgServer;
use crate::replicas::{Replica, must};
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, RSA_PRIVATE_KEY, RSA_PUBLIC_KEY};

/// `kps backup ARGS` with the extra environment `env`; the output, which must be a success when `ok`.
fn backup(args: &[&str], data: &Path, env: &[(&str, &str)], ok: bool) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kps"))
        .arg("backup")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("KPS_CONFIG")
        .env_remove("KPS_MASTER_KEY_FILE")
        .env("KPS_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run kps backup");
    assert_eq!(out.status.success(), ok, "kps backup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn escrow(name: &str, scope: &str, public_key: &str, private_key: &str, encryption: &Value) -> Value {
    json!({"keypair": {"name": name, "scope": scope, "public_key": public_key.trim_end(),
        "key_protection": {"private_key": private_key, "encryption": encryption}}})
}

#[test]
fn a_sled_store_with_escrowed_keys_moves_to_postgres_through_backup() {
    let Some(pg) = PgServer::start() else { return };
    let kms = KmsMock::start();
    let kms_env: Vec<(&str, String)> = kms.env().into_iter().collect();
    let kms_env: Vec<(&str, &str)> = kms_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let parent = tempfile::tempdir().expect("tempdir");
    let sled_data = parent.path().join("sled");
    let client = reqwest::blocking::Client::new();

    // On sled: escrowed keys under both encryptors and both scopes, a generated one, and a plain import.
    let server = Server::start_with_env(&sled_data, &kms_env);
    let default = json!({"type": "default"});
    let by_kms = json!({"type": "kms", "kms_key_name": "kps-escrow"});
    let mut escrowed: Vec<(String, String)> = Vec::new();
    for (name, scope, public, private, encryption) in [
        ("default-ed", "user", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY, &default),
        ("default-rsa", "domain", RSA_PUBLIC_KEY, RSA_PRIVATE_KEY, &default),
        ("kms-ed", "user", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY, &by_kms),
        ("kms-rsa", "domain", RSA_PUBLIC_KEY, RSA_PRIVATE_KEY, &by_kms),
    ] {
        let body = escrow(name, scope, public, private, encryption);
        let (status, answer) = must(&client, "POST", &format!("{}/v3/p/keypairs", server.url), "u:p", Some(&body));
        assert_eq!(status, 200, "{name}: {answer}");
        escrowed.push((name.to_owned(), private.to_owned()));
    }
    let generate = json!({"keypair": {"name": "generated", "key_protection": {"encryption": {"type": "default"}}}});
    let (status, generated) = must(&client, "POST", &format!("{}/v3/p/keypairs", server.url), "u:p", Some(&generate));
    assert_eq!(status, 200, "{generated}");
    escrowed.push(("generated".into(), generated["keypair"]["private_key"].as_str().expect("private key").into()));
    let plain = json!({"keypair": {"name": "plain", "public_key": crate::ED25519_VECTOR}});
    assert_eq!(must(&client, "POST", &format!("{}/v2.1/os-keypairs", server.url), "u:p", Some(&plain)).0, 200);
    let shows = |base: &str| -> Vec<Value> {
        let (status, list) = must(&client, "GET", &format!("{base}/v3/p/keypairs"), "u:p", None);
        assert_eq!(status, 200, "{list}");
        let names: Vec<String> = list["keypairs"]
            .as_array()
            .expect("keypairs")
            .iter()
            .map(|k| k["keypair"]["name"].as_str().expect("name").to_owned())
            .collect();
        names
            .iter()
            .map(|name| {
                let (status, mut shown) = must(&client, "GET", &format!("{base}/v3/p/keypairs/{name}"), "u:p", None);
                assert_eq!(status, 200, "{shown}");
                shown["keypair"].as_object_mut().expect("keypair").remove("update_time");
                shown
            })
            .collect()
    };
    let on_sled = shows(&server.url);
    assert_eq!(on_sled.len(), 6);
    assert!(server.stop().success());

    // sled → file → PostgreSQL.
    let file = parent.path().join("move.jsonl");
    backup(&["export", file.to_str().expect("path")], &sled_data, &[], true);
    let keyring = sled_data.join("master.key");
    let keyring_env = keyring.to_str().expect("path");
    let store_url = pg.url();
    let postgres = [
        ("KPS_STORE_BACKEND", "postgres"),
        ("KPS_STORE_POSTGRES_URL", store_url.as_str()),
        ("KPS_MASTER_KEY_FILE", keyring_env),
    ];
    let unused = parent.path().join("unused");
    backup(&["import", file.to_str().expect("path")], &unused, &postgres, true);
    let again = backup(&["import", file.to_str().expect("path")], &unused, &postgres, false);
    eprintln!("a second import is refused: {}", String::from_utf8_lossy(&again.stderr).trim());

    // A replica on PostgreSQL with the sled store's keyring: the same key pairs, ids included.
    let replica = Replica::start(&pg.url(), &keyring, &kms_env);
    assert_eq!(shows(&replica.url), on_sled, "every key pair, as it was on sled");
    for (name, private_key) in &escrowed {
        let export = json!({"keypair": {"name": name}});
        let url = format!("{}/v3/p/keypairs/private-key/export", replica.url);
        let (status, exported) = must(&client, "POST", &url, "u:p", Some(&export));
        assert_eq!(status, 200, "{name}: {exported}");
        assert_eq!(exported["keypair"]["private_key"].as_str(), Some(private_key.as_str()), "{name} unchanged");
    }
    // New ids continue after the moved ones.
    let (status, created) = must(
        &client,
        "POST",
        &format!("{}/v3/p/keypairs", replica.url),
        "u:p",
        Some(&json!({"keypair": {"name": "new", "public_key": crate::ED25519_VECTOR}})),
    );
    assert_eq!(status, 200, "{created}");
    let (_, shown) = must(&client, "GET", &format!("{}/v3/p/keypairs/new", replica.url), "u:p", None);
    let max_moved = on_sled.iter().filter_map(|k| k["keypair"]["id"].as_u64()).max().expect("ids");
    assert!(shown["keypair"]["id"].as_u64().expect("id") > max_moved, "ids move past the moved ones");
}
