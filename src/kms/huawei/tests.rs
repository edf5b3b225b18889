//! The Huawei client without a KMS: the error mapping of §6, error code parsing, endpoint building, the
//! response buffer and request bodies, and an unreachable endpoint. The tests against a KMS drive the real
//! `kms-mock` binary (tests/api/kms_huawei.rs).

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::*;

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "ExampleSecretKey0000000000000000000000001";
const ESCROW_ID: &str = "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1";

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

fn alias(name: &str) -> KeyRef {
    KeyRef::Alias(name.to_owned())
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
