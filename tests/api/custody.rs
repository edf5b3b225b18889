//! KPS V2.1 `key_protection` custody through the Nova API (nova-keypairs.md §8): escrow of generated and
//! imported private keys under the `default` encryptor, the private-key checks, and what reaches the disk.

use base64::Engine;
use serde_json::json;

use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, ENCRYPTED_PRIVATE_KEY, Kps, RSA_PRIVATE_KEY, RSA_PUBLIC_KEY};

fn protected_import(name: &str, public_key: &str, private_key: &str) -> String {
    json!({"keypair": {"name": name, "public_key": public_key,
        "key_protection": {"private_key": private_key, "encryption": {"type": "default"}}}})
    .to_string()
}

#[tokio::test]
async fn generate_with_key_protection_returns_the_private_key_once_and_nova_fields_only() {
    let kps = Kps::new();
    let body = r#"{"keypair": {"name": "escrowed", "key_protection": {"encryption": {"type": "default"}}}}"#;
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.2"), Some(body)).await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    let keypair = answer.json()["keypair"].clone();
    let mut keys: Vec<&str> = keypair.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["fingerprint", "name", "private_key", "public_key", "type", "user_id"]);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn import_with_a_matching_private_key_is_escrowed() {
    let kps = Kps::new();
    for (name, public_key, private_key) in
        [("ed", ED25519_PUBLIC_KEY, ED25519_PRIVATE_KEY), ("rsa", RSA_PUBLIC_KEY, RSA_PRIVATE_KEY)]
    {
        let answer = kps
            .nova(
                "POST",
                "/v2.1/os-keypairs",
                "u:p",
                None,
                Some(&protected_import(name, public_key.trim_end(), private_key)),
            )
            .await;
        assert_eq!(answer.status, 200, "{name}: {}", String::from_utf8_lossy(&answer.body));
        assert!(answer.json()["keypair"].get("private_key").is_none(), "an imported private key is never echoed");
    }
}

#[tokio::test]
async fn private_key_problems_are_reported_with_the_key_pair_name_and_store_nothing() {
    let kps = Kps::new();
    let cases = [
        (RSA_PRIVATE_KEY, "KPS.1302", "Private key does not match the public key of keypair k"),
        ("not a key", "KPS.1301", "Private key of keypair k could not be parsed"),
        (
            ENCRYPTED_PRIVATE_KEY,
            "KPS.1304",
            "Encrypted private keys are not supported; import the key without a passphrase",
        ),
    ];
    for (private_key, code, message) in cases {
        let answer = kps
            .nova(
                "POST",
                "/v2.1/os-keypairs",
                "u:p",
                None,
                Some(&protected_import("k", ED25519_PUBLIC_KEY.trim_end(), private_key)),
            )
            .await;
        answer.assert_error(400, code, message);
    }
    let without_public = json!({"keypair": {"name": "k", "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "default"}}}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&without_public.to_string())).await;
    answer.assert_error(400, "KPS.1303", "key_protection.private_key requires keypair.public_key");
    let kms = json!({"keypair": {"name": "k", "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "kms", "kms_key_name": "kps-escrow"}}}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&kms.to_string())).await;
    answer.assert_error(400, "KPS.1402", "Encryption type kms is not available: no KMS is configured");
    let list = kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await;
    assert_eq!(list.json()["keypairs"], json!([]));
}

#[tokio::test]
async fn the_quota_comes_before_private_key_checks() {
    let kps = Kps::with_config(|c| c.quota.key_pairs = 0);
    let answer = kps
        .nova(
            "POST",
            "/v2.1/os-keypairs",
            "u:p",
            None,
            Some(&protected_import("k", ED25519_PUBLIC_KEY.trim_end(), "garbage")),
        )
        .await;
    assert_eq!(answer.json()["error_code"], "KPS.1501");
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read")));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_file_in_the_data_dir_holds_escrowed_plaintext() {
    let kps = Kps::new();
    let answer = kps
        .nova(
            "POST",
            "/v2.1/os-keypairs",
            "u:p",
            None,
            Some(&protected_import("rsa", RSA_PUBLIC_KEY.trim_end(), RSA_PRIVATE_KEY)),
        )
        .await;
    assert_eq!(answer.status, 200);
    let generated = kps
        .nova(
            "POST",
            "/v2.1/os-keypairs",
            "u:p",
            None,
            Some(r#"{"keypair": {"name": "gen", "key_protection": {"encryption": {"type": "default"}}}}"#),
        )
        .await;
    let generated_pem = generated.json()["keypair"]["private_key"].as_str().expect("private key").to_owned();

    for pem in [RSA_PRIVATE_KEY.to_owned(), generated_pem] {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(&body).expect("base64");
        let der_windows: std::collections::HashSet<&[u8]> = der.windows(32).collect();
        for (path, bytes) in files(kps.dir.path()) {
            assert!(!contains(&bytes, pem.as_bytes()), "{} holds the PEM", path.display());
            for line in pem.lines().filter(|l| l.len() > 20 && !l.starts_with("-----")) {
                assert!(!contains(&bytes, line.as_bytes()), "{} holds a base64 line of the key", path.display());
            }
            assert!(
                !bytes.windows(32).any(|w| der_windows.contains(w)),
                "{} holds a 32-byte window of the DER key",
                path.display()
            );
        }
    }
}
