//! The Huawei client against the in-process `kms-mock`: resolution and its cache, data-key round trips,
//! the error mapping of §6 and the transport rules of §1.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::kms::mock::{Fault, MockConfig, MockServer};

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "ExampleSecretKey0000000000000000000000001";
const ESCROW_ID: &str = "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1";
const OTHER_ID: &str = "7d2e0c55-41a9-4f0b-b0de-5a7f4c2e9a10";

fn quick_transport() -> Transport {
    Transport {
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_millis(400),
        budget: Duration::from_secs(5),
        max_attempts: 3,
        backoff: vec![Duration::from_millis(10), Duration::from_millis(20)],
        max_jitter: Duration::ZERO,
    }
}

fn client_for(endpoint: &str, sk: &str, transport: Transport) -> HuaweiKms {
    HuaweiKms::new(HuaweiSettings {
        endpoint: Some(endpoint.to_owned()),
        region: None,
        project_id: PROJECT.to_owned(),
        credentials: Credentials::new(AK, SecretString::from(sk)),
        transport,
    })
    .expect("client")
}

async fn mock_with(keys: &[String], seed: Option<std::path::PathBuf>) -> MockServer {
    let mut config = MockConfig::new(PROJECT, Some((AK, SK)));
    config.keys = keys.to_vec();
    config.seed = seed;
    MockServer::start("127.0.0.1:0", config).await.expect("mock starts")
}

async fn setup() -> (MockServer, HuaweiKms) {
    let mock = mock_with(&[format!("kps-escrow={ESCROW_ID}"), format!("other={OTHER_ID}")], None).await;
    let client = client_for(&mock.endpoint(), SK, quick_transport());
    (mock, client)
}

fn alias(name: &str) -> KeyRef {
    KeyRef::Alias(name.to_owned())
}

#[tokio::test]
async fn resolve_by_alias_lists_keys_only_on_a_miss() {
    let (mock, kms) = setup().await;
    let resolved = kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    assert_eq!(resolved.key_id, ESCROW_ID);
    assert_eq!(resolved.alias.as_deref(), Some("kps-escrow"));
    assert_eq!((resolved.state.as_str(), resolved.spec.as_str()), ("2", "AES_256"));
    kms.resolve(&alias("kps-escrow")).await.expect("cached");
    assert_eq!(mock.calls("list-keys"), 1, "the second resolve is a cache hit");
    assert_eq!(mock.calls("describe-key"), 0);

    for _ in 0..2 {
        let error = kms.resolve(&alias("missing")).await.expect_err("unknown alias");
        assert_eq!(error, KmsError::KeyNotFound { key: "missing".into() });
    }
    assert_eq!(mock.calls("list-keys"), 2, "an unknown alias is listed for once, then remembered");
}

#[tokio::test]
async fn exactly_one_data_key_call_per_seal_once_the_name_cache_is_warm() {
    let (mock, kms) = setup().await;
    for _ in 0..3 {
        let key = kms.resolve(&alias("kps-escrow")).await.expect("resolves");
        kms.generate_data_key(&key.key_id).await.expect("data key");
    }
    assert_eq!(mock.calls("list-keys"), 1);
    assert_eq!(mock.calls("create-datakey"), 3);
}

#[tokio::test]
async fn resolve_by_id_describes_the_key_once() {
    let (mock, kms) = setup().await;
    let key = KeyRef::Id(OTHER_ID.to_owned());
    assert_eq!(kms.resolve(&key).await.expect("resolves").alias.as_deref(), Some("other"));
    kms.resolve(&key).await.expect("cached");
    assert_eq!((mock.calls("describe-key"), mock.calls("list-keys")), (1, 0));
    let unknown = KeyRef::Id("00000000-0000-4000-8000-000000000000".into());
    assert!(matches!(kms.resolve(&unknown).await, Err(KmsError::KeyNotFound { .. })));
}

#[tokio::test]
async fn alias_resolution_pages_through_list_keys() {
    let keys: Vec<String> = (0..250).map(|i| format!("key-{i:03}")).collect();
    let mock = mock_with(&keys, None).await;
    let kms = client_for(&mock.endpoint(), SK, quick_transport());
    kms.resolve(&alias("key-149")).await.expect("found on the second page");
    assert_eq!(mock.calls("list-keys"), 2, "stops at the first match");
    kms.resolve(&alias("key-005")).await.expect("found on the first page");
    assert_eq!(mock.calls("list-keys"), 2, "every alias a listing saw is cached");
    kms.resolve(&alias("key-249")).await.expect("found on the third page");
    assert_eq!(mock.calls("list-keys"), 5, "a new listing starts from the first page");
}

#[tokio::test]
async fn one_listing_reads_at_most_ten_pages() {
    let keys: Vec<String> = (0..1_050).map(|i| format!("key-{i:04}")).collect();
    let mock = mock_with(&keys, None).await;
    let kms = client_for(&mock.endpoint(), SK, quick_transport());
    kms.resolve(&alias("key-0999")).await.expect("on the tenth page");
    assert_eq!(mock.calls("list-keys"), 10);
    let error = kms.resolve(&alias("key-1000")).await.expect_err("past the page bound");
    assert_eq!(error, KmsError::KeyNotFound { key: "key-1000".into() });
    assert_eq!(mock.calls("list-keys"), 20, "the next listing stopped at ten pages as well");
    assert!(kms.resolve(&alias("key-1049")).await.is_err());
    assert_eq!(mock.calls("list-keys"), 20, "a miss right after a full listing is answered from its table");
}

#[tokio::test]
async fn concurrent_resolves_of_one_reference_make_one_kms_call() {
    let (mock, kms) = setup().await;
    // Slow answers, so that all the lookups overlap the first one's call.
    mock.inject_fault(Fault { delay_ms: Some(100), count: 2, ..Fault::default() });
    let escrow = alias("kps-escrow");
    let by_alias = (0..20).map(|_| kms.resolve(&escrow));
    assert!(futures_util::future::join_all(by_alias).await.iter().all(Result::is_ok));
    assert_eq!(mock.calls("list-keys"), 1);
    let other = KeyRef::Id(OTHER_ID.into());
    let by_id = (0..20).map(|_| kms.resolve(&other));
    assert!(futures_util::future::join_all(by_id).await.iter().all(Result::is_ok));
    assert_eq!(mock.calls("describe-key"), 1);
}

#[tokio::test]
async fn a_flood_of_unknown_references_makes_one_call_per_miss_window() {
    let (mock, kms) = setup().await;
    let kms = kms.with_cache(DEFAULT_TTL, Duration::from_millis(300), DEFAULT_CAPACITY);
    let names: Vec<KeyRef> = (0..50).map(|i| alias(&format!("nope-{i}"))).collect();
    let answers = futures_util::future::join_all(names.iter().map(|name| kms.resolve(name))).await;
    assert!(answers.iter().all(|answer| matches!(answer, Err(KmsError::KeyNotFound { .. }))));
    assert_eq!(mock.calls("list-keys"), 1, "concurrent misses share one listing");
    assert!(kms.resolve(&alias("nope-0")).await.is_err());
    assert!(kms.resolve(&alias("never-asked")).await.is_err());
    assert_eq!(mock.calls("list-keys"), 1, "later misses in the window are answered from the table");
    let unknown_id = KeyRef::Id("00000000-0000-4000-8000-000000000000".into());
    for _ in 0..3 {
        assert!(matches!(kms.resolve(&unknown_id).await, Err(KmsError::KeyNotFound { .. })));
    }
    assert_eq!(mock.calls("describe-key"), 1, "an unknown key id is remembered too");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(kms.resolve(&alias("nope-0")).await.is_err());
    assert!(kms.resolve(&unknown_id).await.is_err());
    assert_eq!((mock.calls("list-keys"), mock.calls("describe-key")), (2, 2), "...for the miss window only");
}

#[tokio::test]
async fn a_key_created_after_a_miss_is_found_once_the_window_ends() {
    let (mock, kms) = setup().await;
    let kms = kms.with_cache(DEFAULT_TTL, Duration::from_millis(100), DEFAULT_CAPACITY);
    assert!(kms.resolve(&alias("late")).await.is_err());
    call_mock(&mock, "create-key", &json!({"key_alias": "late"})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(kms.resolve(&alias("late")).await.expect("found").alias.as_deref(), Some("late"));
}

/// A raw signed call to the mock (what an operator's tooling would do).
async fn call_mock(mock: &MockServer, action: &'static str, body: &serde_json::Value) {
    let kms = client_for(&mock.endpoint(), SK, quick_transport());
    let _: serde_json::Value = kms.call(action, body.to_string().as_bytes()).await.expect("mock call");
}

/// Issue 11.8: a 200 answer without its required fields is KPS.1801, never "not found" or "disabled".
#[tokio::test]
async fn a_success_without_its_required_fields_is_1801() {
    let (mock, kms) = setup().await;
    let unusable = |action: &str| KmsError::Unavailable { detail: format!("{action} answered an unusable body") };
    let malformed = |answer: serde_json::Value| Fault { answer: Some(answer), count: 1, ..Fault::default() };
    for answer in [
        json!({}),
        json!({"keys": [], "truncated": "false"}),
        json!({"key_details": [{"key_id": ESCROW_ID, "key_state": "2", "key_spec": "AES_256"}]}),
        json!({"key_details": [{"key_alias": "kps-escrow", "key_state": "2", "key_spec": "AES_256"}]}),
        json!({"key_details": [{"key_id": "", "key_alias": "x", "key_state": "2", "key_spec": "AES_256"}]}),
        json!({"key_details": [], "truncated": "true", "next_marker": ""}),
    ] {
        mock.inject_fault(malformed(answer.clone()));
        assert_eq!(kms.resolve(&alias("kps-escrow")).await, Err(unusable("list-keys")), "{answer}");
    }
    for answer in [json!({}), json!({"key_info": {"key_id": OTHER_ID, "key_state": "2"}})] {
        mock.inject_fault(malformed(answer.clone()));
        assert_eq!(kms.resolve(&KeyRef::Id(OTHER_ID.into())).await, Err(unusable("describe-key")), "{answer}");
    }
    mock.inject_fault(malformed(json!({})));
    assert_eq!(kms.generate_data_key(ESCROW_ID).await.expect_err("{}"), unusable("create-datakey"));
    let data_key = kms.generate_data_key(ESCROW_ID).await.expect("data key");
    for answer in [json!({}), json!({"data_key": hex::encode(data_key.plaintext()), "datakey_length": "32"})] {
        mock.inject_fault(malformed(answer.clone()));
        let error = kms.decrypt_data_key(ESCROW_ID, data_key.cipher_text()).await.expect_err("malformed");
        assert_eq!(error, unusable("decrypt-datakey"), "{answer}");
    }
    mock.inject_fault(malformed(json!({})));
    assert_eq!(kms.encrypt_data_key(OTHER_ID, data_key.plaintext()).await, Err(unusable("encrypt-datakey")));
    // None of these were taken for a missing key: both references still resolve, from the KMS.
    assert!(kms.resolve(&alias("kps-escrow")).await.is_ok());
    assert!(kms.resolve(&KeyRef::Id(OTHER_ID.into())).await.is_ok());
}

#[tokio::test]
async fn cache_entries_expire_after_the_ttl() {
    let (mock, kms) = setup().await;
    let kms = kms.with_cache(Duration::from_millis(50), MISS_TTL, 1024);
    kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    tokio::time::sleep(Duration::from_millis(80)).await;
    kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    assert_eq!(mock.calls("list-keys"), 2);
    kms.clear_cache();
    kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    assert_eq!(mock.calls("list-keys"), 3, "clear_cache forgets");
}

#[tokio::test]
async fn disabled_and_pending_deletion_keys_fail_before_any_data_key_call() {
    let (mock, kms) = setup().await;
    mock.set_key_state(ESCROW_ID, "3");
    mock.set_key_state(OTHER_ID, "4");
    assert_eq!(kms.resolve(&alias("kps-escrow")).await, Err(KmsError::KeyDisabled { key: "kps-escrow".into() }));
    assert_eq!(
        kms.resolve(&KeyRef::Id(OTHER_ID.into())).await,
        Err(KmsError::KeyUnusable { key: OTHER_ID.into(), state: "4".into() })
    );
    assert_eq!(mock.calls("create-datakey"), 0);
}

#[tokio::test]
async fn a_data_key_call_answering_disabled_evicts_the_cached_key() {
    let (mock, kms) = setup().await;
    let key = kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    kms.resolve(&KeyRef::Id(ESCROW_ID.into())).await.expect("resolves by id too");
    mock.set_key_state(ESCROW_ID, "3");
    assert_eq!(
        kms.generate_data_key(&key.key_id).await.expect_err("KMS.0209"),
        KmsError::KeyDisabled { key: ESCROW_ID.into() }
    );
    assert_eq!(kms.resolve(&alias("kps-escrow")).await, Err(KmsError::KeyDisabled { key: "kps-escrow".into() }));
    assert_eq!(mock.calls("list-keys"), 2, "the alias entry was evicted");
    assert!(kms.resolve(&KeyRef::Id(ESCROW_ID.into())).await.is_err());
    assert_eq!(mock.calls("describe-key"), 2, "so was the id entry");
    mock.set_key_state(ESCROW_ID, "4");
    assert_eq!(
        kms.generate_data_key(ESCROW_ID).await.expect_err("KMS.0210"),
        KmsError::KeyUnusable { key: ESCROW_ID.into(), state: "4".into() }
    );
}

#[tokio::test]
async fn keys_that_are_not_aes_256_are_refused_with_1401() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    let sm4 = json!([{"id": ESCROW_ID, "alias": "sm4-key", "state": "2", "spec": "SM4"}]);
    std::fs::write(&seed, sm4.to_string()).expect("seed");
    let mock = mock_with(&[], Some(seed)).await;
    let kms = client_for(&mock.endpoint(), SK, quick_transport());
    let error = kms.resolve(&alias("sm4-key")).await.expect_err("SM4");
    assert_eq!(error.code(), "KPS.1401");
    assert_eq!(error.to_string(), "Invalid key_protection: unsupported KMS key spec");
}

#[tokio::test]
async fn data_keys_round_trip_and_rewrap() {
    let (_mock, kms) = setup().await;
    let data_key = kms.generate_data_key(ESCROW_ID).await.expect("data key");
    assert_eq!(data_key.key_id, ESCROW_ID);
    let opened = kms.decrypt_data_key(ESCROW_ID, data_key.cipher_text()).await.expect("decrypts");
    assert_eq!(*opened, *data_key.plaintext());

    let rewrapped = kms.encrypt_data_key(OTHER_ID, data_key.plaintext()).await.expect("encrypt-datakey");
    let reopened = kms.decrypt_data_key(OTHER_ID, &rewrapped).await.expect("decrypts under the new key");
    assert_eq!(*reopened, *data_key.plaintext());
}

#[tokio::test]
async fn a_foreign_or_damaged_cipher_text_is_1806() {
    let (_mock, kms) = setup().await;
    let data_key = kms.generate_data_key(ESCROW_ID).await.expect("data key");
    let moved = kms.decrypt_data_key(OTHER_ID, data_key.cipher_text()).await.expect_err("wrong key");
    assert_eq!(moved.code(), "KPS.1806");
    let mut damaged = data_key.cipher_text().to_owned();
    let last = if damaged.ends_with('0') { "1" } else { "0" };
    damaged.replace_range(damaged.len() - 1.., last);
    let error = kms.decrypt_data_key(ESCROW_ID, &damaged).await.expect_err("tag fails");
    assert_eq!(error, KmsError::Undecryptable { detail: "decrypt-datakey answered KMS.0308".into() });
}

#[tokio::test]
async fn a_wrong_secret_key_is_1805_without_retries() {
    let (mock, _) = setup().await;
    let kms = client_for(&mock.endpoint(), "not-the-secret", quick_transport());
    let error = kms.resolve(&alias("kps-escrow")).await.expect_err("bad signature");
    assert_eq!(error, KmsError::CredentialsRejected { detail: "list-keys answered KMS.0302".into() });
    assert_eq!(mock.calls("list-keys"), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_1801() {
    let (mock, kms) = setup().await;
    mock.inject_fault(Fault { status: Some(503), count: 2, ..Fault::default() });
    kms.generate_data_key(ESCROW_ID).await.expect("the third attempt succeeds");
    assert_eq!(mock.calls("create-datakey"), 3);

    mock.inject_fault(Fault { status: Some(500), count: 3, ..Fault::default() });
    let error = kms.generate_data_key(ESCROW_ID).await.expect_err("three failures");
    assert_eq!(
        error,
        KmsError::Unavailable { detail: "create-datakey answered HTTP 500 (KMS.0101) after 3 attempts".into() }
    );
    assert_eq!(mock.calls("create-datakey"), 6);
}

#[tokio::test]
async fn slow_answers_time_out_per_attempt_then_1801() {
    let (mock, kms) = setup().await;
    mock.inject_fault(Fault { delay_ms: Some(1_000), count: 3, ..Fault::default() });
    let error = kms.generate_data_key(ESCROW_ID).await.expect_err("timeouts");
    assert_eq!(error, KmsError::Unavailable { detail: "timeout after 3 attempts calling create-datakey".into() });
}

#[tokio::test]
async fn the_overall_budget_cuts_a_running_attempt() {
    let (mock, _) = setup().await;
    let transport =
        Transport { attempt_timeout: Duration::from_secs(10), budget: Duration::from_millis(300), ..quick_transport() };
    let kms = client_for(&mock.endpoint(), SK, transport);
    mock.inject_fault(Fault { delay_ms: Some(2_000), count: 3, ..Fault::default() });
    let started = Instant::now();
    let error = kms.generate_data_key(ESCROW_ID).await.expect_err("budget spent");
    assert!(started.elapsed() < Duration::from_millis(1_000), "{:?}", started.elapsed());
    assert_eq!(error, KmsError::Unavailable { detail: "timeout after 1 attempt calling create-datakey".into() });
}

#[tokio::test]
async fn an_unreachable_kms_is_1801_after_three_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let kms = client_for(&endpoint, SK, quick_transport());
    let error = kms.resolve(&alias("kps-escrow")).await.expect_err("refused");
    assert_eq!(error, KmsError::Unavailable { detail: "connection failed after 3 attempts calling list-keys".into() });
}

#[test]
fn upstream_answers_map_per_section_6() {
    let status = |status: u16, code: Option<&str>| FailureKind::Status { status, code: code.map(str::to_owned) };
    let map =
        |action: &'static str, kind: FailureKind| Failure { operation: action, attempts: 3, kind }.into_error("k");
    let table: Vec<(&'static str, FailureKind, &str)> = vec![
        ("describe-key", status(400, Some("KMS.0205")), "KPS.1802"),
        ("describe-key", status(404, Some("KMS.0207")), "KPS.1802"),
        ("create-datakey", status(400, Some("KMS.0209")), "KPS.1803"),
        ("create-datakey", status(400, Some("KMS.0210")), "KPS.1804"),
        ("list-keys", status(401, Some("KMS.0301")), "KPS.1805"),
        ("list-keys", status(401, Some("KMS.0302")), "KPS.1805"),
        ("list-keys", status(401, Some("KMS.0303")), "KPS.1805"),
        ("list-keys", status(403, Some("KMS.0306")), "KPS.1805"),
        ("list-keys", status(403, None), "KPS.1805"),
        ("list-keys", status(401, Some("KMS.9999")), "KPS.1805"),
        ("decrypt-datakey", status(400, Some("KMS.0308")), "KPS.1806"),
        ("encrypt-datakey", status(400, Some("KMS.0308")), "KPS.1801"),
        ("create-datakey", status(503, None), "KPS.1801"),
        ("create-datakey", status(429, None), "KPS.1801"),
        ("create-datakey", status(400, Some("KMS.0101")), "KPS.1801"),
        ("create-datakey", status(400, Some("KMS.0204")), "KPS.1801"),
        ("create-datakey", status(418, None), "KPS.1801"),
        ("create-datakey", FailureKind::UnusableBody, "KPS.1801"),
        ("create-datakey", FailureKind::Timeout, "KPS.1801"),
        ("create-datakey", FailureKind::Connection, "KPS.1801"),
    ];
    for (action, kind, code) in table {
        let description = format!("{action} {kind:?}");
        assert_eq!(map(action, kind).code(), code, "{description}");
    }
    assert_eq!(
        map("encrypt-datakey", status(400, Some("KMS.0308"))).to_string(),
        "KMS is unavailable: encrypt-datakey answered KMS.0308"
    );
    assert_eq!(map("list-keys", status(418, None)).to_string(), "KMS is unavailable: list-keys answered HTTP 418");
}

#[test]
fn error_codes_are_read_from_the_huawei_shape_and_sanitised() {
    assert_eq!(
        error_code(br#"{"error":{"error_code":"KMS.0207","error_msg":"Key x does not exist."}}"#).as_deref(),
        Some("KMS.0207")
    );
    assert_eq!(error_code(br#"{"error_code":"KMS.0302","error_msg":"no"}"#).as_deref(), Some("KMS.0302"));
    assert_eq!(error_code(br#"{"error":{"error_code":"see https://evil/ for details"}}"#), None);
    assert_eq!(error_code(b"<html>bad gateway</html>"), None);
}

#[test]
fn the_default_endpoint_comes_from_the_region() {
    let built = HuaweiKms::new(HuaweiSettings {
        endpoint: None,
        region: Some("cn-north-4".into()),
        project_id: PROJECT.into(),
        credentials: Credentials::new(AK, SecretString::from(SK)),
        transport: Transport::default(),
    });
    let kms = built.expect("client");
    assert_eq!(kms.base.as_str(), format!("https://kms.cn-north-4.myhuaweicloud.com/v1.0/{PROJECT}/kms/"));
    assert_eq!(kms.host, "kms.cn-north-4.myhuaweicloud.com");
    let explicit = client_for("http://kms.internal:8080/prefix/", SK, Transport::default());
    assert_eq!(explicit.base.as_str(), format!("http://kms.internal:8080/prefix/v1.0/{PROJECT}/kms/"));
    assert_eq!(explicit.host, "kms.internal:8080");
    let default_port = client_for("http://kms.internal:80", SK, Transport::default());
    assert_eq!(default_port.host, "kms.internal", "no port on the scheme's default port");
    assert!(!format!("{explicit:?}").contains(SK), "Debug hides the SK");
}

#[test]
fn a_growing_response_buffer_keeps_its_bytes() {
    let mut buffer = Zeroizing::new(Vec::with_capacity(4));
    let mut expected = Vec::new();
    for chunk in [&b"{\"plain"[..], b"_text\":", b"\"00ff\"", b"}"] {
        append_zeroizing(&mut buffer, chunk);
        expected.extend_from_slice(chunk);
        assert_eq!(*buffer, expected);
    }
    let before = buffer.as_ptr();
    let room = buffer.capacity() - buffer.len();
    append_zeroizing(&mut buffer, &vec![b' '; room]);
    assert_eq!(buffer.as_ptr(), before, "no move while the bytes fit");
}

#[test]
fn request_bodies_are_serialized_to_their_exact_size() {
    let request = EncryptDatakeyRequest { key_id: ESCROW_ID, plain_text: "00ff", datakey_plain_length: "32" };
    let body = body_bytes(&request);
    assert_eq!(body.len(), body.capacity(), "no spare capacity: the buffer never grew");
    let parsed: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(parsed, json!({"key_id": ESCROW_ID, "plain_text": "00ff", "datakey_plain_length": "32"}));
}
