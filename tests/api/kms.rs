//! The real `kms-mock` binary on 127.0.0.1, driven by `kps::kms::KmsClient` (spec/kms-huawei.md §3-§6):
//! resolution by alias and id, the KPS.18xx mapping of key states, credentials, faults and ciphertexts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kps::config::Config;
use kps::custody::Aad;
use kps::kms::huawei::HuaweiSettings;
use kps::kms::{EncryptionContext, HuaweiKms, KeyRef, KmsClient, KmsError, Transport};
use kps::signing::{self, Credentials, SignedRequest};
use secrecy::SecretString;
use serde_json::{Value, json};

pub const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub const AK: &str = "HPUAEXAMPLEAK0000001";
pub const SK: &str = "ExampleSecretKey0000000000000000000000001";
pub const ESCROW_ID: &str = "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1";
pub const DISABLED_ID: &str = "11111111-1111-4111-8111-111111111111";
const DOOMED_ID: &str = "44444444-4444-4444-8444-444444444444";

/// The record a data key belongs to (Huawei's API carries no such binding; the AAD does, locally).
fn record() -> EncryptionContext {
    Aad { project_id: "p".into(), user_id: "u".into(), name: "db-admin".into(), record_id: 1 }.encryption_context()
}

/// The `kms-mock` binary of this build. It is another package of the workspace, so Cargo gives these tests
/// no `CARGO_BIN_EXE_kms-mock`: it sits next to their own `target/<profile>/deps/`, where `cargo test` at the
/// workspace root puts it (kms-mock has integration tests of its own, so Cargo builds its binary first).
pub fn kms_mock_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test executable is in target/<profile>/deps");
    let bin = profile_dir.join("kms-mock");
    assert!(bin.is_file(), "{} is missing: build it with cargo test at the workspace root", bin.display());
    bin
}

/// A running `kms-mock` process with the keys it printed.
pub struct KmsMock {
    child: Child,
    pub endpoint: String,
    keys: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

impl KmsMock {
    /// Starts the binary with `--key kps-escrow=ESCROW_ID`, `--key other` and a seed with a disabled and a
    /// pending-deletion key.
    pub fn start() -> Self {
        let seed = json!([
            {"id": DISABLED_ID, "alias": "disabled-key", "state": "3", "spec": "AES_256"},
            {"id": DOOMED_ID, "alias": "doomed-key", "state": "4", "spec": "AES_256"}
        ]);
        Self::start_with(&[format!("kps-escrow={ESCROW_ID}"), "other".into()], Some(&seed))
    }

    /// Starts the binary on a free port (`--listen 127.0.0.1:0`), credentials from the environment, a
    /// `--key` per entry of `keys` (`ALIAS[=UUID]`) and `seed` as its seed file; reads its startup lines.
    pub fn start_with(keys: &[String], seed: Option<&Value>) -> Self {
        Self::start_with_args(keys, seed, &[])
    }

    /// [`KmsMock::start_with`] with more command-line arguments (e.g. `--security-token`).
    pub fn start_with_args(keys: &[String], seed: Option<&Value>, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(kms_mock_bin());
        command.args(["--listen", "127.0.0.1:0"]).args(args);
        for key in keys {
            command.args(["--key", key]);
        }
        if let Some(seed) = seed {
            let path = dir.path().join("seed.json");
            std::fs::write(&path, seed.to_string()).expect("seed");
            command.arg("--seed").arg(&path);
        }
        let mut child = command
            .env("KMS_MOCK_AK", AK)
            .env("KMS_MOCK_SK", SK)
            .env_remove("KMS_MOCK_STATE")
            .env_remove("KMS_MOCK_TOKEN")
            .env_remove("KMS_MOCK_SECURITY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kms-mock");
        let stdout = child.stdout.take().expect("stdout");
        let mut keys = HashMap::new();
        let mut endpoint = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(addr) = line.strip_prefix("listening on ") {
                endpoint = Some(format!("http://{addr}"));
                break;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "unexpected startup line {line:?}");
            assert_eq!(parts[0], "key");
            keys.insert(parts[1].to_owned(), parts[2].to_owned());
        }
        let endpoint = endpoint.expect("kms-mock printed its address");
        Self { child, endpoint, keys, _dir: dir }
    }

    /// A Huawei client of this mock signing with `sk`.
    pub fn huawei(&self, sk: &str, transport: Transport) -> HuaweiKms {
        HuaweiKms::new(HuaweiSettings {
            endpoint: Some(self.endpoint.clone()),
            region: None,
            project_id: PROJECT.to_owned(),
            credentials: Credentials::new(AK, SecretString::from(sk)),
            transport,
        })
        .expect("client")
    }

    fn client(&self, sk: &str, transport: Transport) -> KmsClient {
        KmsClient::Huawei(self.huawei(sk, transport))
    }

    /// The client exactly as kps builds it from `kms.*` (default transport), the SK read from `sk_file`.
    fn configured_client(&self, sk_file: &Path) -> KmsClient {
        let mut config = Config::default();
        self.configure(&mut config);
        config.kms.sk = None;
        config.kms.sk_file = Some(sk_file.to_owned());
        kps::kms::from_config(&config.kms, false, None).expect("valid config").expect("a provider is configured")
    }

    /// The `kms.*` settings that make this mock kps's Huawei KMS (the credentials as values), as the
    /// `KPS_KMS_*` environment of a `kps` process. [`KmsMock::configure`] is the same for kps in-process.
    pub fn env(&self) -> [(&'static str, String); 6] {
        [
            ("KPS_KMS_PROVIDER", "huawei".into()),
            ("KPS_KMS_ENDPOINT", self.endpoint.clone()),
            ("KPS_KMS_PROJECT_ID", PROJECT.into()),
            ("KPS_KMS_REGION", "test".into()),
            ("KPS_KMS_AK", AK.into()),
            ("KPS_KMS_SK", SK.into()),
        ]
    }

    /// Points `config` at this mock as its Huawei KMS: the settings of [`KmsMock::env`].
    pub fn configure(&self, config: &mut Config) {
        config.kms.provider = Some("huawei".into());
        config.kms.endpoint = Some(self.endpoint.clone());
        config.kms.project_id = Some(PROJECT.into());
        config.kms.region = Some("test".into());
        config.kms.ak = Some(AK.into());
        config.kms.sk = Some(SK.into());
    }

    /// A raw signed call, as an operator's tooling would make it; the call must succeed.
    pub async fn call(&self, action: &str, body: &Value) -> Value {
        let path = format!("/v1.0/{PROJECT}/kms/{action}");
        let body = body.to_string();
        let host = self.endpoint.trim_start_matches("http://").to_owned();
        let headers = [("Content-Type".to_owned(), "application/json".to_owned()), ("Host".to_owned(), host)];
        let request =
            SignedRequest { method: "POST", path: &path, query: "", headers: &headers, body: body.as_bytes() };
        let credentials = Credentials::new(AK, SecretString::from(SK));
        let signature = signing::sign(&request, &credentials, time::OffsetDateTime::now_utc());
        reqwest::Client::new()
            .post(format!("{}{path}", self.endpoint))
            .header("Content-Type", "application/json")
            .header(signing::DATE_HEADER, signature.sdk_date)
            .header("Authorization", signature.authorization)
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("mock call")
            .json()
            .await
            .expect("json")
    }

    /// Puts a key in `state` through the lifecycle calls: `3` (disabled) or `4` (pending deletion).
    pub async fn set_key_state(&self, key_id: &str, state: &str) {
        match state {
            "3" => self.call("disable-key", &json!({"key_id": key_id})).await,
            "4" => self.call("schedule-key-deletion", &json!({"key_id": key_id, "pending_days": "7"})).await,
            other => panic!("no lifecycle call leads to state {other}"),
        };
    }

    pub async fn fault(&self, fault: Value) {
        let answer = reqwest::Client::new()
            .post(format!("{}/_mock/fault", self.endpoint))
            .json(&fault)
            .send()
            .await
            .expect("fault");
        assert_eq!(answer.status().as_u16(), 204);
    }

    pub async fn calls(&self, action: &str) -> u64 {
        let calls: Value = reqwest::Client::new()
            .get(format!("{}/_mock/calls", self.endpoint))
            .send()
            .await
            .expect("calls")
            .json()
            .await
            .expect("json");
        calls[action].as_u64().unwrap_or(0)
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().expect("wait")
    }
}

impl Drop for KmsMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quick() -> Transport {
    Transport {
        attempt_timeout: Duration::from_millis(500),
        backoff: vec![Duration::from_millis(20), Duration::from_millis(40)],
        max_jitter: Duration::from_millis(5),
        ..Transport::default()
    }
}

fn alias(name: &str) -> KeyRef {
    KeyRef::Alias(name.to_owned())
}

#[tokio::test]
async fn kms_mock_prints_its_keys_and_resolves_by_alias_and_id() {
    let mock = KmsMock::start();
    assert_eq!(mock.keys.get("kps-escrow").map(String::as_str), Some(ESCROW_ID));
    assert_eq!(mock.keys.len(), 4, "two --key and two seeded keys: {:?}", mock.keys);
    let dir = tempfile::tempdir().expect("tempdir");
    let sk_file = dir.path().join("sk");
    std::fs::write(&sk_file, format!("{SK}\n")).expect("sk file");
    std::fs::set_permissions(&sk_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let kms = mock.configured_client(&sk_file);

    let by_alias = kms.resolve(&alias("kps-escrow")).await.expect("alias resolves");
    assert_eq!(by_alias.key_id, ESCROW_ID);
    let other_id = mock.keys["other"].clone();
    let by_id = kms.resolve(&KeyRef::Id(other_id.clone())).await.expect("id resolves");
    assert_eq!((by_id.key_id.as_str(), by_id.alias.as_deref()), (other_id.as_str(), Some("other")));

    for _ in 0..3 {
        let key = kms.resolve(&alias("kps-escrow")).await.expect("cached");
        let data_key = kms.generate_data_key(&key.key_id, &record()).await.expect("data key");
        let opened = kms.decrypt_data_key(&key.key_id, data_key.cipher_text(), &record()).await.expect("decrypts");
        assert_eq!(*opened, *data_key.plaintext());
    }
    assert_eq!(mock.calls("list-keys").await, 1, "resolve lists keys only on a miss");
    assert_eq!(mock.calls("create-datakey").await, 3, "one data-key call per seal");
    assert!(mock.stop().success(), "SIGTERM exits 0");
}

#[tokio::test]
async fn kms_unknown_alias_is_1802() {
    let mock = KmsMock::start();
    let kms = mock.client(SK, quick());
    let error = kms.resolve(&alias("no-such-alias")).await.expect_err("unknown");
    assert_eq!(error.code(), "KPS.1802");
    assert_eq!(error.to_string(), "KMS key no-such-alias not found");
    let unknown_id = KeyRef::Id("00000000-0000-4000-8000-000000000000".into());
    assert_eq!(kms.resolve(&unknown_id).await.expect_err("unknown id").code(), "KPS.1802");
}

#[tokio::test]
async fn kms_disabled_key_is_1803_and_pending_deletion_is_1804() {
    let mock = KmsMock::start();
    let kms = mock.client(SK, quick());
    let disabled = kms.resolve(&alias("disabled-key")).await.expect_err("disabled");
    assert_eq!((disabled.code(), disabled.to_string().as_str()), ("KPS.1803", "KMS key disabled-key is disabled"));
    let doomed = kms.resolve(&KeyRef::Id(DOOMED_ID.into())).await.expect_err("pending deletion");
    assert_eq!(doomed.code(), "KPS.1804");
    assert_eq!(doomed.to_string(), format!("KMS key {DOOMED_ID} is pending deletion or not usable (state 4)"));
    assert_eq!(mock.calls("create-datakey").await, 0, "states are checked before any data-key call");
    // The data-key calls themselves answer the same codes (KMS.0209 / KMS.0210).
    assert_eq!(kms.generate_data_key(DISABLED_ID, &record()).await.expect_err("KMS.0209").code(), "KPS.1803");
    assert_eq!(kms.generate_data_key(DOOMED_ID, &record()).await.expect_err("KMS.0210").code(), "KPS.1804");
}

#[tokio::test]
async fn kms_wrong_secret_key_is_1805() {
    let mock = KmsMock::start();
    let kms = mock.client("WrongSecretKey", quick());
    let error = kms.resolve(&alias("kps-escrow")).await.expect_err("bad signature");
    assert_eq!(error.code(), "KPS.1805");
    assert_eq!(error.to_string(), "KMS rejected the service credentials: list-keys answered KMS.0302");
    assert!(!error.to_string().contains("WrongSecretKey"));
}

#[tokio::test]
async fn kms_server_errors_are_retried_then_1801() {
    let mock = KmsMock::start();
    let kms = mock.client(SK, quick());
    mock.fault(json!({"status": 503, "count": 2})).await;
    kms.generate_data_key(ESCROW_ID, &record()).await.expect("the third attempt succeeds");
    assert_eq!(mock.calls("create-datakey").await, 3);

    mock.fault(json!({"status": 503, "count": 3})).await;
    let error = kms.generate_data_key(ESCROW_ID, &record()).await.expect_err("all attempts fail");
    assert_eq!(error.code(), "KPS.1801");
    assert_eq!(error.to_string(), "KMS is unavailable: create-datakey answered HTTP 503 (KMS.0101) after 3 attempts");
    assert_eq!(mock.calls("create-datakey").await, 6, "exactly three attempts");
}

#[tokio::test]
async fn kms_latency_above_the_timeout_is_1801() {
    let mock = KmsMock::start();
    let kms = mock.client(SK, quick());
    mock.fault(json!({"delay_ms": 2000, "count": 3})).await;
    let error = kms.resolve(&alias("kps-escrow")).await.expect_err("timeouts");
    assert_eq!(error.code(), "KPS.1801");
    assert_eq!(error.to_string(), "KMS is unavailable: timeout after 3 attempts calling list-keys");
}

#[tokio::test]
async fn kms_wrong_ciphertext_is_1806() {
    let mock = KmsMock::start();
    let kms = mock.client(SK, quick());
    let data_key = kms.generate_data_key(ESCROW_ID, &record()).await.expect("data key");
    let other = &mock.keys["other"];
    let moved = kms.decrypt_data_key(other, data_key.cipher_text(), &record()).await.expect_err("wrong key");
    assert_eq!(moved.code(), "KPS.1806");
    assert_eq!(
        moved.message_for_keypair("db-admin"),
        "Escrowed private key of keypair db-admin could not be decrypted"
    );
    let garbage = kms.decrypt_data_key(ESCROW_ID, "00ff", &record()).await.expect_err("garbage");
    assert!(matches!(garbage, KmsError::Undecryptable { .. }));
    let rewrapped = kms.encrypt_data_key(other, data_key.plaintext(), &record()).await.expect("rewrap");
    assert_eq!(*kms.decrypt_data_key(other, &rewrapped, &record()).await.expect("opens"), *data_key.plaintext());
}
