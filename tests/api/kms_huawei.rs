//! The Huawei client (`kps::kms::HuaweiKms`) against the real `kms-mock` binary (spec/kms-huawei.md):
//! resolution and its cache, data-key round trips, the error mapping of §6 and the transport rules of §1.
//! `kms.rs` drives the same mock through `KmsClient`, as kps's custody does.

use std::time::{Duration, Instant};

use kps::kms::{HuaweiKms, KeyRef, KmsError, Transport};
use serde_json::json;

use crate::kms::{ESCROW_ID, KmsMock, SK};

const OTHER_ID: &str = "7d2e0c55-41a9-4f0b-b0de-5a7f4c2e9a10";
/// The client's cache defaults (kms/cache.rs), for the tests that change only some of them.
const DEFAULT_TTL: Duration = Duration::from_secs(60);
const MISS_TTL: Duration = Duration::from_secs(10);
const DEFAULT_CAPACITY: u64 = 1024;

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

fn setup() -> (KmsMock, HuaweiKms) {
    let mock = KmsMock::start_with(&[format!("kps-escrow={ESCROW_ID}"), format!("other={OTHER_ID}")], None);
    let client = mock.huawei(SK, quick_transport());
    (mock, client)
}

fn alias(name: &str) -> KeyRef {
    KeyRef::Alias(name.to_owned())
}

#[tokio::test]
async fn resolve_by_alias_lists_keys_only_on_a_miss() {
    let (mock, kms) = setup();
    let resolved = kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    assert_eq!(resolved.key_id, ESCROW_ID);
    assert_eq!(resolved.alias.as_deref(), Some("kps-escrow"));
    assert_eq!((resolved.state.as_str(), resolved.spec.as_str()), ("2", "AES_256"));
    kms.resolve(&alias("kps-escrow")).await.expect("cached");
    assert_eq!(mock.calls("list-keys").await, 1, "the second resolve is a cache hit");
    assert_eq!(mock.calls("describe-key").await, 0);

    for _ in 0..2 {
        let error = kms.resolve(&alias("missing")).await.expect_err("unknown alias");
        assert_eq!(error, KmsError::KeyNotFound { key: "missing".into() });
    }
    assert_eq!(mock.calls("list-keys").await, 2, "an unknown alias is listed for once, then remembered");
}

#[tokio::test]
async fn exactly_one_data_key_call_per_seal_once_the_name_cache_is_warm() {
    let (mock, kms) = setup();
    for _ in 0..3 {
        let key = kms.resolve(&alias("kps-escrow")).await.expect("resolves");
        kms.generate_data_key(&key.key_id).await.expect("data key");
    }
    assert_eq!(mock.calls("list-keys").await, 1);
    assert_eq!(mock.calls("create-datakey").await, 3);
}

#[tokio::test]
async fn resolve_by_id_describes_the_key_once() {
    let (mock, kms) = setup();
    let key = KeyRef::Id(OTHER_ID.to_owned());
    assert_eq!(kms.resolve(&key).await.expect("resolves").alias.as_deref(), Some("other"));
    kms.resolve(&key).await.expect("cached");
    assert_eq!((mock.calls("describe-key").await, mock.calls("list-keys").await), (1, 0));
    let unknown = KeyRef::Id("00000000-0000-4000-8000-000000000000".into());
    assert!(matches!(kms.resolve(&unknown).await, Err(KmsError::KeyNotFound { .. })));
}

#[tokio::test]
async fn alias_resolution_pages_through_list_keys() {
    let keys: Vec<String> = (0..250).map(|i| format!("key-{i:03}")).collect();
    let mock = KmsMock::start_with(&keys, None);
    let kms = mock.huawei(SK, quick_transport());
    kms.resolve(&alias("key-149")).await.expect("found on the second page");
    assert_eq!(mock.calls("list-keys").await, 2, "stops at the first match");
    kms.resolve(&alias("key-005")).await.expect("found on the first page");
    assert_eq!(mock.calls("list-keys").await, 2, "every alias a listing saw is cached");
    kms.resolve(&alias("key-249")).await.expect("found on the third page");
    assert_eq!(mock.calls("list-keys").await, 5, "a new listing starts from the first page");
}

#[tokio::test]
async fn one_listing_reads_at_most_ten_pages() {
    let keys: Vec<String> = (0..1_050).map(|i| format!("key-{i:04}")).collect();
    let mock = KmsMock::start_with(&keys, None);
    let kms = mock.huawei(SK, quick_transport());
    kms.resolve(&alias("key-0999")).await.expect("on the tenth page");
    assert_eq!(mock.calls("list-keys").await, 10);
    let error = kms.resolve(&alias("key-1000")).await.expect_err("past the page bound");
    assert_eq!(error, KmsError::KeyNotFound { key: "key-1000".into() });
    assert_eq!(mock.calls("list-keys").await, 20, "the next listing stopped at ten pages as well");
    assert!(kms.resolve(&alias("key-1049")).await.is_err());
    assert_eq!(mock.calls("list-keys").await, 20, "a miss right after a full listing is answered from its table");
}

#[tokio::test]
async fn concurrent_resolves_of_one_reference_make_one_kms_call() {
    let (mock, kms) = setup();
    // Slow answers, so that all the lookups overlap the first one's call.
    mock.fault(json!({"delay_ms": 100, "count": 2})).await;
    let escrow = alias("kps-escrow");
    let by_alias = (0..20).map(|_| kms.resolve(&escrow));
    assert!(futures_util::future::join_all(by_alias).await.iter().all(Result::is_ok));
    assert_eq!(mock.calls("list-keys").await, 1);
    let other = KeyRef::Id(OTHER_ID.into());
    let by_id = (0..20).map(|_| kms.resolve(&other));
    assert!(futures_util::future::join_all(by_id).await.iter().all(Result::is_ok));
    assert_eq!(mock.calls("describe-key").await, 1);
}

#[tokio::test]
async fn a_flood_of_unknown_references_makes_one_call_per_miss_window() {
    let (mock, kms) = setup();
    let kms = kms.with_cache(DEFAULT_TTL, Duration::from_millis(300), DEFAULT_CAPACITY);
    let names: Vec<KeyRef> = (0..50).map(|i| alias(&format!("nope-{i}"))).collect();
    let answers = futures_util::future::join_all(names.iter().map(|name| kms.resolve(name))).await;
    assert!(answers.iter().all(|answer| matches!(answer, Err(KmsError::KeyNotFound { .. }))));
    assert_eq!(mock.calls("list-keys").await, 1, "concurrent misses share one listing");
    assert!(kms.resolve(&alias("nope-0")).await.is_err());
    assert!(kms.resolve(&alias("never-asked")).await.is_err());
    assert_eq!(mock.calls("list-keys").await, 1, "later misses in the window are answered from the table");
    let unknown_id = KeyRef::Id("00000000-0000-4000-8000-000000000000".into());
    for _ in 0..3 {
        assert!(matches!(kms.resolve(&unknown_id).await, Err(KmsError::KeyNotFound { .. })));
    }
    assert_eq!(mock.calls("describe-key").await, 1, "an unknown key id is remembered too");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(kms.resolve(&alias("nope-0")).await.is_err());
    assert!(kms.resolve(&unknown_id).await.is_err());
    assert_eq!(
        (mock.calls("list-keys").await, mock.calls("describe-key").await),
        (2, 2),
        "...for the miss window only"
    );
}

#[tokio::test]
async fn a_key_created_after_a_miss_is_found_once_the_window_ends() {
    let (mock, kms) = setup();
    let kms = kms.with_cache(DEFAULT_TTL, Duration::from_millis(100), DEFAULT_CAPACITY);
    assert!(kms.resolve(&alias("late")).await.is_err());
    mock.call("create-key", &json!({"key_alias": "late"})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(kms.resolve(&alias("late")).await.expect("found").alias.as_deref(), Some("late"));
}

/// Issue 11.8: a 200 answer without its required fields is KPS.1801, never "not found" or "disabled".
#[tokio::test]
async fn a_success_without_its_required_fields_is_1801() {
    let (mock, kms) = setup();
    let unusable = |action: &str| KmsError::Unavailable { detail: format!("{action} answered an unusable body") };
    let malformed = |answer: serde_json::Value| json!({"answer": answer, "count": 1});
    for answer in [
        json!({}),
        json!({"keys": [], "truncated": "false"}),
        json!({"key_details": [{"key_id": ESCROW_ID, "key_state": "2", "key_spec": "AES_256"}]}),
        json!({"key_details": [{"key_alias": "kps-escrow", "key_state": "2", "key_spec": "AES_256"}]}),
        json!({"key_details": [{"key_id": "", "key_alias": "x", "key_state": "2", "key_spec": "AES_256"}]}),
        json!({"key_details": [], "truncated": "true", "next_marker": ""}),
    ] {
        mock.fault(malformed(answer.clone())).await;
        assert_eq!(kms.resolve(&alias("kps-escrow")).await, Err(unusable("list-keys")), "{answer}");
    }
    for answer in [json!({}), json!({"key_info": {"key_id": OTHER_ID, "key_state": "2"}})] {
        mock.fault(malformed(answer.clone())).await;
        assert_eq!(kms.resolve(&KeyRef::Id(OTHER_ID.into())).await, Err(unusable("describe-key")), "{answer}");
    }
    mock.fault(malformed(json!({}))).await;
    assert_eq!(kms.generate_data_key(ESCROW_ID).await.expect_err("{}"), unusable("create-datakey"));
    let data_key = kms.generate_data_key(ESCROW_ID).await.expect("data key");
    for answer in [json!({}), json!({"data_key": hex::encode(data_key.plaintext()), "datakey_length": "32"})] {
        mock.fault(malformed(answer.clone())).await;
        let error = kms.decrypt_data_key(ESCROW_ID, data_key.cipher_text()).await.expect_err("malformed");
        assert_eq!(error, unusable("decrypt-datakey"), "{answer}");
    }
    mock.fault(malformed(json!({}))).await;
    assert_eq!(kms.encrypt_data_key(OTHER_ID, data_key.plaintext()).await, Err(unusable("encrypt-datakey")));
    // None of these were taken for a missing key: both references still resolve, from the KMS.
    assert!(kms.resolve(&alias("kps-escrow")).await.is_ok());
    assert!(kms.resolve(&KeyRef::Id(OTHER_ID.into())).await.is_ok());
}

#[tokio::test]
async fn cache_entries_expire_after_the_ttl() {
    let (mock, kms) = setup();
    let kms = kms.with_cache(Duration::from_millis(50), MISS_TTL, 1024);
    kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    tokio::time::sleep(Duration::from_millis(80)).await;
    kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    assert_eq!(mock.calls("list-keys").await, 2);
    kms.clear_cache();
    kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    assert_eq!(mock.calls("list-keys").await, 3, "clear_cache forgets");
}

#[tokio::test]
async fn disabled_and_pending_deletion_keys_fail_before_any_data_key_call() {
    let (mock, kms) = setup();
    mock.set_key_state(ESCROW_ID, "3").await;
    mock.set_key_state(OTHER_ID, "4").await;
    assert_eq!(kms.resolve(&alias("kps-escrow")).await, Err(KmsError::KeyDisabled { key: "kps-escrow".into() }));
    assert_eq!(
        kms.resolve(&KeyRef::Id(OTHER_ID.into())).await,
        Err(KmsError::KeyUnusable { key: OTHER_ID.into(), state: "4".into() })
    );
    assert_eq!(mock.calls("create-datakey").await, 0);
}

#[tokio::test]
async fn a_data_key_call_answering_disabled_evicts_the_cached_key() {
    let (mock, kms) = setup();
    let key = kms.resolve(&alias("kps-escrow")).await.expect("resolves");
    kms.resolve(&KeyRef::Id(ESCROW_ID.into())).await.expect("resolves by id too");
    mock.set_key_state(ESCROW_ID, "3").await;
    assert_eq!(
        kms.generate_data_key(&key.key_id).await.expect_err("KMS.0209"),
        KmsError::KeyDisabled { key: ESCROW_ID.into() }
    );
    assert_eq!(kms.resolve(&alias("kps-escrow")).await, Err(KmsError::KeyDisabled { key: "kps-escrow".into() }));
    assert_eq!(mock.calls("list-keys").await, 2, "the alias entry was evicted");
    assert!(kms.resolve(&KeyRef::Id(ESCROW_ID.into())).await.is_err());
    assert_eq!(mock.calls("describe-key").await, 2, "so was the id entry");
    mock.set_key_state(ESCROW_ID, "4").await;
    assert_eq!(
        kms.generate_data_key(ESCROW_ID).await.expect_err("KMS.0210"),
        KmsError::KeyUnusable { key: ESCROW_ID.into(), state: "4".into() }
    );
}

#[tokio::test]
async fn keys_that_are_not_aes_256_are_refused_with_1401() {
    let sm4 = json!([{"id": ESCROW_ID, "alias": "sm4-key", "state": "2", "spec": "SM4"}]);
    let mock = KmsMock::start_with(&[], Some(&sm4));
    let kms = mock.huawei(SK, quick_transport());
    let error = kms.resolve(&alias("sm4-key")).await.expect_err("SM4");
    assert_eq!(error.code(), "KPS.1401");
    assert_eq!(error.to_string(), "Invalid key_protection: unsupported KMS key spec");
}

#[tokio::test]
async fn data_keys_round_trip_and_rewrap() {
    let (_mock, kms) = setup();
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
    let (_mock, kms) = setup();
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
    let (mock, _) = setup();
    let kms = mock.huawei("not-the-secret", quick_transport());
    let error = kms.resolve(&alias("kps-escrow")).await.expect_err("bad signature");
    assert_eq!(error, KmsError::CredentialsRejected { detail: "list-keys answered KMS.0302".into() });
    assert_eq!(mock.calls("list-keys").await, 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_1801() {
    let (mock, kms) = setup();
    mock.fault(json!({"status": 503, "count": 2})).await;
    kms.generate_data_key(ESCROW_ID).await.expect("the third attempt succeeds");
    assert_eq!(mock.calls("create-datakey").await, 3);

    mock.fault(json!({"status": 500, "count": 3})).await;
    let error = kms.generate_data_key(ESCROW_ID).await.expect_err("three failures");
    assert_eq!(
        error,
        KmsError::Unavailable { detail: "create-datakey answered HTTP 500 (KMS.0101) after 3 attempts".into() }
    );
    assert_eq!(mock.calls("create-datakey").await, 6);
}

#[tokio::test]
async fn slow_answers_time_out_per_attempt_then_1801() {
    let (mock, kms) = setup();
    mock.fault(json!({"delay_ms": 1_000, "count": 3})).await;
    let error = kms.generate_data_key(ESCROW_ID).await.expect_err("timeouts");
    assert_eq!(error, KmsError::Unavailable { detail: "timeout after 3 attempts calling create-datakey".into() });
}

#[tokio::test]
async fn the_overall_budget_cuts_a_running_attempt() {
    let (mock, _) = setup();
    let transport =
        Transport { attempt_timeout: Duration::from_secs(10), budget: Duration::from_millis(300), ..quick_transport() };
    let kms = mock.huawei(SK, transport);
    mock.fault(json!({"delay_ms": 2_000, "count": 3})).await;
    let started = Instant::now();
    let error = kms.generate_data_key(ESCROW_ID).await.expect_err("budget spent");
    assert!(started.elapsed() < Duration::from_millis(1_000), "{:?}", started.elapsed());
    assert_eq!(error, KmsError::Unavailable { detail: "timeout after 1 attempt calling create-datakey".into() });
}
