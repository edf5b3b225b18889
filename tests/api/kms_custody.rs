//! Custody with `encryption.type = kms` against the real `kms-mock` binary: escrow through Nova and V3,
//! exactly one data-key call per seal, reads without KMS calls, and KMS failures that store nothing.

use serde_json::{Value, json};

use crate::kms::{DISABLED_ID, ESCROW_ID, KmsMock};
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, Kps};

async fn v3(kps: &Kps, method: &str, path: &str, body: Option<&Value>) -> crate::Answer {
    let text = body.map(Value::to_string);
    kps.call(method, path, &[("x-auth-token", "u:p"), ("content-type", "application/json")], text.as_deref()).await
}

fn escrow(name: &str, encryption: Value) -> Value {
    json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": encryption}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_escrow_round_trips_with_one_data_key_call_per_seal() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    let by_alias = json!({"type": "kms", "kms_key_name": "kps-escrow"});
    for i in 0..3 {
        let answer = v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow(&format!("k{i}"), by_alias.clone()))).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
    assert_eq!(kms.calls("create-datakey").await, 3, "exactly one data-key call per seal");
    assert_eq!(kms.calls("list-keys").await, 1, "the alias is resolved once, then cached");

    let show = v3(&kps, "GET", "/v3/p/keypairs/k0", None).await.json()["keypair"].clone();
    assert_eq!(show["is_key_protection"], true);
    assert_eq!(show["key_id"], ESCROW_ID);
    let before = kms.calls("decrypt-datakey").await;
    v3(&kps, "GET", "/v3/p/keypairs", None).await;
    kps.nova("GET", "/v2.1/os-keypairs/k1", "u:p", None, None).await;
    assert_eq!(kms.calls("decrypt-datakey").await, before, "reads make no KMS call");

    let exported =
        v3(&kps, "POST", "/v3/p/keypairs/private-key/export", Some(&json!({"keypair": {"name": "k2"}}))).await;
    assert_eq!(exported.json()["keypair"]["private_key"], ED25519_PRIVATE_KEY);

    let by_id = json!({"type": "kms", "kms_key_id": ESCROW_ID});
    let nova = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&escrow("nova-kms", by_id).to_string())).await;
    assert_eq!(nova.status, 200, "{}", String::from_utf8_lossy(&nova.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_problems_are_catalogue_errors_and_store_nothing() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    let unknown =
        v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("a", json!({"type": "kms", "kms_key_name": "nope"})))).await;
    unknown.assert_error(400, "KPS.1802", "KMS key nope not found");
    let disabled =
        v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("b", json!({"type": "kms", "kms_key_id": DISABLED_ID})))).await;
    disabled.assert_error(400, "KPS.1803", &format!("KMS key {DISABLED_ID} is disabled"));
    assert_eq!(kms.calls("create-datakey").await, 0, "state is checked before any data-key call");

    kms.fault(json!({"status": 503, "count": 10})).await;
    let down =
        v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("c", json!({"type": "kms", "kms_key_name": "kps-escrow"}))))
            .await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json()["error_code"], "KPS.1801");
    let list = v3(&kps, "GET", "/v3/p/keypairs", None).await;
    assert_eq!(list.json()["keypairs"], json!([]), "nothing stored after any KMS failure");

    // The service recovers by itself once the KMS answers again.
    let _ = reqwest::Client::new().delete(format!("{}/_mock/fault", kms.endpoint)).send().await;
    let ok =
        v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("c", json!({"type": "kms", "kms_key_name": "kps-escrow"}))))
            .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let health = kps.call("GET", "/healthz", &[], None).await;
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_fails_cleanly_while_the_kms_is_down() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    let created =
        v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("k", json!({"type": "kms", "kms_key_name": "kps-escrow"}))))
            .await;
    assert_eq!(created.status, 200);
    kms.fault(json!({"status": 503, "count": 10})).await;
    let export = v3(&kps, "POST", "/v3/p/keypairs/private-key/export", Some(&json!({"keypair": {"name": "k"}}))).await;
    assert_eq!(export.status, 503);
    assert_eq!(export.json()["error_code"], "KPS.1801");
    assert!(!String::from_utf8_lossy(&export.body).contains("BEGIN"));
}

/// Issue 11.8: concurrent creates naming one alias make one resolve; an unknown alias asked for twice makes
/// one KMS call (kms-huawei.md §3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_repeated_resolves_do_not_multiply_kms_calls() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    // Slow the first answers so that every create overlaps the first one's resolution.
    kms.fault(json!({"delay_ms": 200, "count": 1})).await;
    let by_alias = json!({"type": "kms", "kms_key_name": "kps-escrow"});
    let bodies: Vec<Value> = (0..12).map(|i| escrow(&format!("k{i}"), by_alias.clone())).collect();
    let creates = bodies.iter().map(|body| v3(&kps, "POST", "/v3/p/keypairs", Some(body)));
    for answer in futures_util::future::join_all(creates).await {
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
    assert_eq!(kms.calls("list-keys").await, 1, "one resolve for twelve concurrent creates");
    assert_eq!(kms.calls("create-datakey").await, 12);

    let unknown = json!({"type": "kms", "kms_key_name": "no-such-alias"});
    for name in ["u1", "u2"] {
        let answer = v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow(name, unknown.clone()))).await;
        answer.assert_error(400, "KPS.1802", "KMS key no-such-alias not found");
    }
    assert_eq!(kms.calls("list-keys").await, 2, "the unknown alias was listed for once");
}

/// Issue 11.8: a KMS answering `{}` makes kps say the KMS is unavailable (503 KPS.1801), never that the key
/// does not exist, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_kms_answer_is_503_1801_not_a_missing_key() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    kms.fault(json!({"answer": {}, "count": 1})).await;
    let by_alias = json!({"type": "kms", "kms_key_name": "kps-escrow"});
    let answer = v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("k", by_alias.clone()))).await;
    answer.assert_error(503, "KPS.1801", "KMS is unavailable: list-keys answered an unusable body");
    kms.fault(json!({"answer": {}, "count": 1})).await;
    let by_id = json!({"type": "kms", "kms_key_id": ESCROW_ID});
    let answer = v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("k", by_id))).await;
    answer.assert_error(503, "KPS.1801", "KMS is unavailable: describe-key answered an unusable body");
    let list = v3(&kps, "GET", "/v3/p/keypairs", None).await;
    assert_eq!(list.json()["keypairs"], json!([]), "nothing stored");
    // The malformed answer was not remembered as "not found".
    let answer = v3(&kps, "POST", "/v3/p/keypairs", Some(&escrow("k", by_alias))).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
}
