//! Auto-unseal (README "Auto-unseal"): the master keyring wrapped by a key of the KMS (`kms-mock`), with the
//! real `kps` binary. No plaintext master key reaches the data directory or the keyring file; startup unwraps
//! it; with the KMS down kps serves Nova calls, answers 503 KPS.1801 for `default` custody and recovers by
//! itself once the KMS is back; `kps master-key wrap|unwrap` convert both ways and keep the keys.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::binary::Server;
use crate::kms::{ESCROW_ID, KmsMock};
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY};

/// The key that wraps the keyring in these tests.
const MASTER_ALIAS: &str = "kps-master";
const MASTER_ID: &str = "5e7a0c1d-2b3f-4a59-8c6d-7e8f9a0b1c2d";
const SEALED_MESSAGE: &str = "KMS is unavailable: the master keyring is sealed, waiting for the KMS";

fn kms_mock() -> KmsMock {
    KmsMock::start_with(&[format!("kps-escrow={ESCROW_ID}"), format!("{MASTER_ALIAS}={MASTER_ID}")], None)
}

/// The mock's `KPS_KMS_*` settings, plus `extra`.
fn env_of(mock: &KmsMock, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = mock.env().into_iter().collect();
    env.extend(extra.iter().map(|(name, value)| (*name, (*value).to_owned())));
    env
}

fn with_master_key(mock: &KmsMock) -> Vec<(&'static str, String)> {
    env_of(mock, &[("KPS_CUSTODY_MASTER_KEY_KMS_KEY", MASTER_ALIAS)])
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

/// `kps <args> --data-dir <data>` with `env` (and no other `KPS_*` setting of the caller).
fn kps(args: &[&str], data: &Path, env: &[(&'static str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("KPS_CONFIG")
        .env_remove("KPS_CUSTODY_MASTER_KEY_KMS_KEY")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .expect("run kps")
}

#[track_caller]
fn succeeds(output: &Output) -> String {
    assert!(output.status.success(), "kps failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn refused(output: &Output) -> String {
    assert!(!output.status.success(), "kps succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The master keys of a plaintext keyring file: id → key bytes.
fn keys_of(keyring: &Path) -> BTreeMap<String, Vec<u8>> {
    let file: toml::Table = std::fs::read_to_string(keyring).expect("keyring").parse().expect("TOML");
    let keys = file["keys"].as_array().expect("plaintext keyring");
    keys.iter()
        .map(|key| {
            let hex_text = key["key_hex"].as_str().expect("key_hex");
            (key["id"].as_str().expect("id").to_owned(), hex::decode(hex_text).expect("hex"))
        })
        .collect()
}

/// The master keys behind a wrapped keyring: `kps master-key unwrap` on a copy of the file.
fn unwrapped_keys(keyring: &Path, env: &[(&'static str, String)]) -> BTreeMap<String, Vec<u8>> {
    let copy = tempfile::tempdir().expect("tempdir");
    let data = copy.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::copy(keyring, data.join("master.key")).expect("copy");
    succeeds(&kps(&["master-key", "unwrap"], &data, &env_of_plain(env)));
    keys_of(&data.join("master.key"))
}

/// `env` without `KPS_CUSTODY_MASTER_KEY_KMS_KEY`.
fn env_of_plain(env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    env.iter().filter(|(name, _)| *name != "KPS_CUSTODY_MASTER_KEY_KMS_KEY").cloned().collect()
}

fn assert_wrapped(keyring: &Path) {
    let text = std::fs::read_to_string(keyring).expect("keyring");
    assert!(text.contains("format = \"kms-wrapped/v1\"") && !text.contains("key_hex"), "{text}");
    assert!(text.contains(&format!("key_id = \"{MASTER_ID}\"")), "{text}");
    assert_eq!(std::fs::metadata(keyring).expect("meta").permissions().mode() & 0o777, 0o600);
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// No file under `dir` holds any of `keys` as raw bytes, hex (either case) or base64 (standard or URL-safe,
/// padded or not).
fn assert_no_plaintext_key(dir: &Path, keys: &BTreeMap<String, Vec<u8>>) {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let files = files_under(dir);
    assert!(files.iter().any(|f| f.ends_with("master.key")), "the keyring file is scanned too: {files:?}");
    for (id, key) in keys {
        let mut forms = vec![key.clone(), hex::encode(key).into_bytes(), hex::encode_upper(key).into_bytes()];
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            forms.push(engine.encode(key).into_bytes());
        }
        for file in &files {
            let bytes = std::fs::read(file).expect("read");
            for form in &forms {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form.as_slice()),
                    "master key {id} in {}",
                    file.display()
                );
            }
        }
    }
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client().request(method, format!("{}{path}", server.url)).header("x-auth-token", "u:p");
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    request.send().expect("request")
}

fn escrow_default(server: &Server, name: &str) -> Response {
    let body = json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "default"}}}});
    call(server, "POST", "/v3/p/keypairs", Some(body))
}

fn export(server: &Server, name: &str) -> Response {
    call(server, "POST", "/v3/p/keypairs/private-key/export", Some(json!({"keypair": {"name": name}})))
}

#[track_caller]
fn assert_sealed(response: Response) {
    assert_eq!(response.status(), 503);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error_code"], "KPS.1801", "{body}");
    assert_eq!(body["error_msg"], SEALED_MESSAGE, "{body}");
}

fn sealed_gauge(server: &Server) -> String {
    let page = call(server, "GET", "/metrics", None).text().expect("metrics");
    let line = page.lines().find(|l| l.starts_with("kps_master_keyring_sealed ")).expect("the gauge");
    line.trim_start_matches("kps_master_keyring_sealed ").to_owned()
}

fn mock_fault(mock: &KmsMock, method: reqwest::Method, body: Option<Value>) {
    let mut request = client().request(method, format!("{}/_mock/fault", mock.endpoint));
    if let Some(body) = body {
        request = request.json(&body);
    }
    assert_eq!(request.send().expect("fault").status(), 204);
}

/// How many calls of `action` the mock answered (faults included).
fn mock_calls(mock: &KmsMock, action: &str) -> u64 {
    let calls: Value =
        client().get(format!("{}/_mock/calls", mock.endpoint)).send().expect("calls").json().expect("json");
    calls[action].as_u64().unwrap_or(0)
}

#[test]
fn a_wrapped_keyring_serves_default_custody_keeps_no_plaintext_key_on_disk_and_survives_a_kms_outage() {
    let mock = kms_mock();
    let env = with_master_key(&mock);
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let keyring = data.join("master.key");
    let made = succeeds(&kps(&["master-key", "generate", "--kms-key", MASTER_ALIAS], &data, &env));
    assert!(made.contains("wrapped by the KMS"), "{made}");
    assert_wrapped(&keyring);

    let server = Server::start_with_env(&data, &borrowed(&env));
    assert_eq!(sealed_gauge(&server), "0");
    assert_eq!(escrow_default(&server, "escrowed").status(), 200);
    let exported: Value = export(&server, "escrowed").json().expect("json");
    assert_eq!(exported["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    assert_eq!(mock_calls(&mock, "decrypt-datakey"), 1, "startup unwraps with exactly one KMS call");
    assert!(server.stop().success());

    let keys = unwrapped_keys(&keyring, &env);
    assert_eq!(keys.len(), 1);
    assert_no_plaintext_key(&data, &keys);

    // A restart with the KMS failing every call: Nova calls are served, default custody is 503 KPS.1801.
    mock_fault(&mock, reqwest::Method::POST, Some(json!({"status": 503, "count": 1_000_000})));
    let server = Server::start_with_env(&data, &borrowed(&env));
    assert_eq!(call(&server, "GET", "/readyz", None).status(), 200);
    assert_eq!(sealed_gauge(&server), "1");
    let created = call(&server, "POST", "/v2.1/os-keypairs", Some(json!({"keypair": {"name": "nova"}})));
    assert_eq!(created.status(), 200);
    let listed: Value = call(&server, "GET", "/v2.1/os-keypairs", None).json().expect("json");
    let names: Vec<&str> = listed["keypairs"]
        .as_array()
        .expect("list")
        .iter()
        .map(|k| k["keypair"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["escrowed", "nova"]);
    assert_eq!(call(&server, "GET", "/v2.1/os-keypairs/nova", None).status(), 200);
    assert_eq!(call(&server, "DELETE", "/v2.1/os-keypairs/nova", None).status(), 202);
    assert_sealed(export(&server, "escrowed"));
    assert_sealed(escrow_default(&server, "another"));
    assert_sealed(call(&server, "DELETE", "/v3/p/keypairs/escrowed/private-key", None));
    assert_eq!(call(&server, "GET", "/v2.1/os-keypairs/another", None).status(), 404, "nothing stored");

    // The KMS returns: the background unwrap opens default custody, no restart.
    mock_fault(&mock, reqwest::Method::DELETE, None);
    let deadline = Instant::now() + Duration::from_secs(90);
    let exported = loop {
        let answer = export(&server, "escrowed");
        if answer.status() == 200 {
            break answer.json::<Value>().expect("json");
        }
        assert_eq!(answer.status(), 503, "sealed until the KMS unwraps the keyring");
        assert!(Instant::now() < deadline, "default custody did not recover after the KMS came back");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(exported["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    assert_eq!(sealed_gauge(&server), "0");
    assert_eq!(escrow_default(&server, "after").status(), 200);
    assert!(server.stop().success());
    assert_no_plaintext_key(&data, &keys);
}

#[test]
fn wrap_and_unwrap_keep_the_keys_and_refuse_a_keyring_already_in_that_form() {
    let mock = kms_mock();
    let env = env_of(&mock, &[]);
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let keyring = data.join("master.key");
    succeeds(&kps(&["master-key", "generate"], &data, &env));
    let plain = keys_of(&keyring);
    let scan = std::panic::catch_unwind(|| assert_no_plaintext_key(&data, &plain));
    assert!(scan.is_err(), "the scan finds the key of a plaintext keyring");

    let message = refused(&kps(&["master-key", "unwrap"], &data, &env));
    assert!(message.contains("is a plaintext keyring already"), "{message}");
    let message = refused(&kps(&["master-key", "wrap"], &data, &env));
    assert!(message.contains("--kms-key NAME, or custody.master_key_kms_key"), "{message}");
    let message = refused(&kps(&["master-key", "generate", "--kms-key", MASTER_ALIAS], &data, &env));
    assert!(message.contains("holds a plaintext keyring: wrap it first"), "{message}");

    // The key name defaults to custody.master_key_kms_key.
    let wrapped = succeeds(&kps(&["master-key", "wrap"], &data, &with_master_key(&mock)));
    assert!(wrapped.contains(MASTER_ID), "{wrapped}");
    assert_wrapped(&keyring);
    assert_no_plaintext_key(&data, &plain);
    let message = refused(&kps(&["master-key", "wrap", "--kms-key", MASTER_ALIAS], &data, &env));
    assert!(message.contains("is wrapped already (by KMS key kps-master"), "{message}");

    // A new key on a wrapped keyring keeps it wrapped, and the old key with it.
    succeeds(&kps(&["master-key", "generate"], &data, &env));
    assert_wrapped(&keyring);
    succeeds(&kps(&["master-key", "unwrap"], &data, &env));
    let unwrapped = keys_of(&keyring);
    assert_eq!(unwrapped.len(), 2);
    for (id, key) in &plain {
        assert_eq!(unwrapped.get(id), Some(key), "{id} kept its bytes");
    }
    assert_eq!(std::fs::metadata(&keyring).expect("meta").permissions().mode() & 0o777, 0o600);

    // With custody.master_key_kms_key set, a plain generate makes a new keyring wrapped, never plaintext.
    let other = parent.path().join("other");
    succeeds(&kps(&["master-key", "generate"], &other, &with_master_key(&mock)));
    assert_wrapped(&other.join("master.key"));
}

#[test]
fn a_permanent_kms_failure_or_a_plaintext_keyring_refuses_to_start() {
    let mock = kms_mock();
    let env = with_master_key(&mock);
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");

    let message = crate::binary::refused_start(&data, &borrowed(&env));
    assert!(message.contains("kps master-key generate --kms-key kps-master"), "{message}");

    succeeds(&kps(&["master-key", "generate"], &data, &env_of_plain(&env)));
    let message = crate::binary::refused_start(&data, &borrowed(&env));
    assert!(message.contains("is plaintext") && message.contains("kps master-key wrap"), "{message}");
    let message = refused(&kps(&["config", "check"], &data, &env));
    assert!(message.contains("requires it wrapped"), "{message}");

    succeeds(&kps(&["master-key", "wrap"], &data, &env));
    let report = succeeds(&kps(&["config", "check"], &data, &env));
    assert!(report.contains("mode ok, wrapped by a KMS key"), "{report}");
    let message = refused(&kps(&["config", "check"], &data, &[]));
    assert!(message.contains("no KMS is configured"), "a wrapped keyring needs the KMS: {message}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(mock.set_key_state(MASTER_ID, "3"));
    let message = crate::binary::refused_start(&data, &borrowed(&env));
    assert!(message.contains(&format!("KMS key {MASTER_ID} is disabled")), "{message}");
}

/// The edge over a sealed keyring, without a KMS: the slot is unsealed by hand where the background unwrap
/// would do it.
#[tokio::test]
async fn a_sealed_keyring_answers_503_kps_1801_for_default_custody_only_until_it_is_unsealed() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = kps::config::Config::default();
    config.keygen.rsa_pool_size = 0;
    config.data_dir = dir.path().to_path_buf();
    let store: Arc<dyn kps::store::Store> =
        Arc::new(kps::store::sled::SledStore::open(&dir.path().join("db")).expect("store"));
    let open = kps::app(Arc::new(kps::state(&config, Arc::clone(&store)).expect("state")));
    let slot = kps::custody::KeyringSlot::sealed();
    let sealed = kps::app(Arc::new(kps::state_with_keyring(&config, store, slot.clone(), None).expect("state")));

    let headers = [("x-auth-token", "u:p"), ("content-type", "application/json")];
    let escrow = |name: &str| {
        json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
            "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": {"type": "default"}}}})
        .to_string()
    };
    let export = json!({"keypair": {"name": "escrowed"}}).to_string();
    let export_path = "/v3/p/keypairs/private-key/export";
    assert_eq!(crate::send(&open, "POST", "/v3/p/keypairs", &headers, Some(&escrow("escrowed"))).await.status, 200);

    crate::send(&sealed, "POST", export_path, &headers, Some(&export)).await.assert_error(
        503,
        "KPS.1801",
        SEALED_MESSAGE,
    );
    let nova = json!({"keypair": {"name": "another", "key_protection": {"encryption": {"type": "default"}}}});
    for (path, body) in [("/v3/p/keypairs", escrow("another")), ("/v2.1/os-keypairs", nova.to_string())] {
        crate::send(&sealed, "POST", path, &headers, Some(&body)).await.assert_error(503, "KPS.1801", SEALED_MESSAGE);
    }
    let clear = crate::send(&sealed, "DELETE", "/v3/p/keypairs/escrowed/private-key", &headers, None).await;
    clear.assert_error(503, "KPS.1801", SEALED_MESSAGE);
    let plain = json!({"keypair": {"name": "plain"}}).to_string();
    assert_eq!(crate::send(&sealed, "POST", "/v2.1/os-keypairs", &headers, Some(&plain)).await.status, 200);
    let listed = crate::send(&sealed, "GET", "/v2.1/os-keypairs", &headers, None).await.json();
    assert_eq!(listed["keypairs"].as_array().map(Vec::len), Some(2), "escrowed and plain; nothing else stored");

    let keyring = kps::custody::MasterKeyring::load(&config.master_key_path(), false).expect("keyring");
    assert!(slot.unseal(keyring));
    let exported = crate::send(&sealed, "POST", export_path, &headers, Some(&export)).await;
    assert_eq!(exported.json()["keypair"]["private_key"], ED25519_PRIVATE_KEY);
    let cleared = crate::send(&sealed, "DELETE", "/v3/p/keypairs/escrowed/private-key", &headers, None).await;
    assert_eq!(cleared.status, 200);
}
