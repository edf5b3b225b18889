//! The audit log, read from the real binary's stderr (`KPS_LOG_FORMAT=json`, `KPS_LOG=trace`): one
//! `kps::audit` line per custody action, naming who, what, which key pair and which key — and no log line at
//! any level carries a private key, a token, the KMS AK/SK, the master key or anything that looks like a
//! data key.

use std::io::Read as _;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::binary::Server;
use crate::kms::{AK, ESCROW_ID, KmsMock, SK};
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, RSA_PRIVATE_KEY, RSA_PUBLIC_KEY};

const TOKEN: &str = "alice-S3CRET-token-0123456789";

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

struct Call<'a> {
    client: reqwest::blocking::Client,
    url: &'a str,
}

impl Call<'_> {
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.url)).header("x-auth-token", TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().expect("request");
        (response.status().as_u16(), response.bytes().expect("body").to_vec())
    }

    #[track_caller]
    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Vec<u8> {
        let (status, body) = self.send(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {}", String::from_utf8_lossy(&body));
        body
    }
}

/// Every line of a PEM / OpenSSH body long enough to be recognisable.
fn secret_fragments(private_key: &str) -> Vec<String> {
    let mut fragments = vec![private_key.trim().to_owned()];
    fragments
        .extend(private_key.lines().filter(|line| !line.starts_with("-----") && line.len() >= 16).map(str::to_owned));
    fragments
}

fn longest_run(line: &str, accept: impl Fn(char) -> bool) -> usize {
    let (mut best, mut current) = (0, 0);
    for c in line.chars() {
        current = if accept(c) { current + 1 } else { 0 };
        best = best.max(current);
    }
    best
}

#[test]
fn custody_actions_are_audited_and_no_log_line_carries_a_secret() {
    let kms = KmsMock::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    write_private(
        &tokens,
        &format!("[[tokens]]\nsha256 = \"{hash}\"\nuser_id = \"alice\"\nproject_id = \"p-42\"\nroles = [\"member\"]\n"),
    );
    let stderr_path = dir.path().join("stderr.log");
    let tokens_file = tokens.to_str().expect("utf-8 path");
    let mut env: Vec<(&str, String)> = kms.env().into_iter().collect();
    env.extend([("KPS_AUTH", "static".into()), ("KPS_AUTH_TOKENS_FILE", tokens_file.into())]);
    env.push(("KPS_KMS_CHECK_KEY", "kps-escrow".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_logging(&dir.path().join("data"), &stderr_path, "trace", &env);
    let url = server.url.clone();
    let call = Call { client: reqwest::blocking::Client::new(), url: &url };
    let kms_escrow = json!({"type": "kms", "kms_key_name": "kps-escrow"});

    // Escrow on create: generated (V3, default encryptor), imported (Nova, KMS).
    let generated = call.ok(
        "POST",
        "/v3/p-42/keypairs",
        Some(json!({"keypair": {"name": "gen", "key_protection": {"encryption": {"type": "default"}}}})),
    );
    let generated: Value = serde_json::from_slice(&generated).expect("json");
    let generated_key = generated["keypair"]["private_key"].as_str().expect("generated private key").to_owned();
    call.ok(
        "POST",
        "/v2.1/os-keypairs",
        Some(json!({"keypair": {"name": "nova-kms", "public_key": ED25519_PUBLIC_KEY.trim_end(),
            "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": kms_escrow}}})),
    );
    // Private-key import onto an existing key pair.
    call.ok(
        "POST",
        "/v3/p-42/keypairs",
        Some(json!({"keypair": {"name": "rsa", "public_key": RSA_PUBLIC_KEY.trim_end()}})),
    );
    call.ok(
        "POST",
        "/v3/p-42/keypairs/private-key/import",
        Some(json!({"keypair": {"name": "rsa", "key_protection": {"private_key": RSA_PRIVATE_KEY,
            "encryption": {"type": "kms", "kms_key_id": ESCROW_ID}}}})),
    );
    // Export, batch export, clear, delete of an escrowed key; a plain delete is not a custody action.
    call.ok("POST", "/v3/p-42/keypairs/private-key/export", Some(json!({"keypair": {"name": "nova-kms"}})));
    call.ok(
        "POST",
        "/v3/p-42/keypairs/private-key/batch-export",
        Some(json!([{"keypair": {"name": "gen"}}, {"keypair": {"name": "rsa"}}])),
    );
    call.ok("DELETE", "/v3/p-42/keypairs/rsa/private-key", None);
    call.ok("DELETE", "/v2.1/os-keypairs/gen", None);
    call.ok("DELETE", "/v3/p-42/keypairs/rsa", None);
    // A failed custody action is audited too: its attempt, then how it failed.
    assert_eq!(
        call.send("POST", "/v3/p-42/keypairs/private-key/export", Some(json!({"keypair": {"name": "rsa"}}))).0,
        404
    );

    let master_key = std::fs::read_to_string(dir.path().join("data/master.key")).expect("master key");
    assert!(server.stop().success());
    let mut log = String::new();
    std::fs::File::open(&stderr_path).expect("log").read_to_string(&mut log).expect("read");

    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}")))
        .collect();
    assert!(lines.iter().any(|l| l["level"] == "TRACE" || l["level"] == "DEBUG"), "KPS_LOG=trace took effect");
    let all_audit: Vec<&Value> = lines.iter().filter(|l| l["target"] == "kps::audit").map(|l| &l["fields"]).collect();
    let audit: Vec<&Value> = all_audit.iter().copied().filter(|f| f["outcome"] == "success").collect();
    let failed = all_audit.last().expect("the failed export's line");
    assert_eq!((&failed["action"], &failed["outcome"]), (&json!("export_private_key"), &json!("failed")));
    assert_eq!((&failed["status"], &failed["keypair_name"]), (&json!(404), &json!("rsa")), "{failed}");
    assert!(failed["error_code"].as_str().is_some_and(|code| code.starts_with("KPS.")), "{failed}");
    // Escrow (2), import, export, batch export, clear, the failed export; a delete's attempt needs audit.file.
    let attempts = all_audit.iter().filter(|f| f["outcome"] == "attempt").count();
    assert_eq!(attempts, 7, "one attempt per custody request before it acted: {all_audit:#?}");
    let actions: Vec<(&str, &str)> =
        audit.iter().map(|f| (f["action"].as_str().unwrap_or(""), f["keypair_name"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        actions,
        [
            ("escrow", "gen"),
            ("escrow", "nova-kms"),
            ("import_private_key", "rsa"),
            ("export_private_key", "nova-kms"),
            ("batch_export", "gen"),
            ("batch_export", "rsa"),
            ("clear_private_key", "rsa"),
            ("delete_escrowed", "gen"),
        ],
        "{audit:#?}"
    );
    for fields in &audit {
        assert_eq!(fields["caller_user"], "alice", "{fields}");
        assert_eq!(fields["caller_project"], "p-42", "{fields}");
        assert_eq!(fields["keypair_user"], "alice", "{fields}");
        assert!(fields["keypair_id"].as_u64().is_some_and(|id| id > 0), "{fields}");
        assert!(fields["request_id"].as_str().is_some_and(|id| id.starts_with("req-")), "{fields}");
    }
    let by_name = |name: &str, action: &str| {
        audit.iter().find(|f| f["keypair_name"] == name && f["action"] == action).copied().cloned().expect("line")
    };
    assert_eq!(by_name("nova-kms", "escrow")["encryptor"], "kms");
    assert_eq!(by_name("nova-kms", "escrow")["key_ref"], ESCROW_ID);
    assert_eq!(by_name("gen", "escrow")["encryptor"], "default");
    let master_id = master_key.lines().find_map(|l| l.strip_prefix("current = ")).expect("current").trim_matches('"');
    assert_eq!(by_name("gen", "escrow")["key_ref"], master_id);
    assert_eq!(by_name("rsa", "clear_private_key")["key_ref"], ESCROW_ID, "the key it was sealed under");

    // No secret anywhere, at any level.
    let master_hex = master_key.lines().find_map(|l| l.strip_prefix("key_hex = ")).expect("key_hex").trim_matches('"');
    let mut secrets: Vec<String> = vec![TOKEN.into(), SK.into(), AK.into(), master_hex.into()];
    for key in [generated_key.as_str(), ED25519_PRIVATE_KEY, RSA_PRIVATE_KEY] {
        secrets.extend(secret_fragments(key));
    }
    for line in log.lines() {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "a secret ({}...) in the log: {line}", &secret[..8]);
            // JSON escapes newlines; look for the escaped form of multi-line secrets too.
            assert!(!line.contains(&secret.replace('\n', "\\n")), "a secret in the log: {line}");
        }
        assert!(!line.contains("PRIVATE KEY"), "{line}");
        // Data keys and master keys are 32 bytes: 64 hex characters (base64: 44).
        assert!(longest_run(line, |c| c.is_ascii_hexdigit()) < 64, "a key-sized hex run: {line}");
        assert!(
            longest_run(line, |c| c.is_ascii_alphanumeric() || c == '+' || c == '/') < 44,
            "a key-sized base64 run: {line}"
        );
    }
}
