//! `GET /metrics`: Prometheus text, no auth, labelled by route template (never by path values), and the
//! figures move with the traffic: requests, latency, custody actions, store commits, KMS calls.

use serde_json::json;

use crate::kms::KmsMock;
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, Kps};

async fn scrape(kps: &Kps) -> String {
    let answer = kps.call("GET", "/metrics", &[], None).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    String::from_utf8(answer.body).expect("utf-8")
}

/// The value of the sample `name{labels}` exactly as written, or 0 when absent.
fn sample(page: &str, series: &str) -> f64 {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status() {
    let kps = Kps::new();
    let before = scrape(&kps).await;
    assert!(before.contains("# TYPE kps_http_requests_total counter"), "{before}");
    assert!(before.contains("# TYPE kps_http_request_duration_seconds histogram"), "{before}");
    assert!(before.contains("kps_build_info{version=\""), "{before}");

    kps.import("u:p", "secret-looking-name", crate::ED25519_VECTOR).await;
    kps.nova("GET", "/v2.1/os-keypairs/secret-looking-name", "u:p", None, None).await;
    kps.nova("GET", "/v2.1/p/os-keypairs/nope", "u:p", None, None).await;
    kps.nova("GET", "/v2.1/os-keypairs/nope", "u:p", None, None).await;
    kps.call("GET", "/v3/p/keypairs", &[("x-auth-token", "u:p")], None).await;
    kps.call("GET", "/no/such/path", &[], None).await;

    let page = scrape(&kps).await;
    let requests = |labels: &str| sample(&page, &format!("kps_http_requests_total{{{labels}}}"));
    assert_eq!(requests(r#"route="nova_keypairs",method="POST",status="200""#), 1.0, "{page}");
    assert_eq!(requests(r#"route="nova_keypair",method="GET",status="200""#), 1.0, "{page}");
    assert_eq!(requests(r#"route="nova_keypair",method="GET",status="404""#), 2.0, "{page}");
    assert_eq!(requests(r#"route="v3_keypairs",method="GET",status="200""#), 1.0, "{page}");
    assert_eq!(requests(r#"route="unmatched",method="GET",status="404""#), 1.0, "{page}");
    // The scrape before this one is counted too.
    assert_eq!(requests(r#"route="metrics",method="GET",status="200""#), 1.0, "{page}");
    assert_eq!(sample(&page, r#"kps_http_request_duration_seconds_count{route="nova_keypair"}"#), 3.0, "{page}");
    assert_eq!(
        sample(&page, r#"kps_http_request_duration_seconds_bucket{route="nova_keypair",le="+Inf"}"#),
        3.0,
        "{page}"
    );
    assert!(!page.contains("secret-looking-name") && !page.contains("nope"), "no path values in labels: {page}");
    // The import went through the store's group committer.
    assert!(sample(&page, "kps_store_commits_total") >= 1.0, "{page}");
    assert!(sample(&page, "kps_store_syncs_total") >= 1.0, "{page}");
    assert!(sample(&page, "kps_store_commit_group_size_count") >= 1.0, "{page}");

    let again = scrape(&kps).await;
    assert_eq!(sample(&again, r#"kps_http_requests_total{route="metrics",method="GET",status="200"}"#), 2.0);
}

#[tokio::test]
async fn metrics_need_no_token_and_are_not_an_api_path() {
    let kps = Kps::new();
    let answer = kps.call("GET", "/metrics", &[], None).await;
    assert_eq!(answer.status, 200, "no token needed");
    let head = kps.call("HEAD", "/metrics", &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let post = kps.call("POST", "/metrics", &[], None).await;
    assert_eq!(post.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custody_actions_and_kms_calls_are_counted() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    let headers = [("x-auth-token", "u:p"), ("content-type", "application/json")];
    let escrow = |name: &str, encryption: serde_json::Value| {
        json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
            "key_protection": {"private_key": ED25519_PRIVATE_KEY, "encryption": encryption}}})
        .to_string()
    };
    let kms_key = json!({"type": "kms", "kms_key_name": "kps-escrow"});
    let created = kps.call("POST", "/v3/p/keypairs", &headers, Some(&escrow("a", kms_key.clone()))).await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let created = kps.call("POST", "/v3/p/keypairs", &headers, Some(&escrow("b", json!({"type": "default"})))).await;
    assert_eq!(created.status, 200);
    let export = json!({"keypair": {"name": "a"}}).to_string();
    assert_eq!(kps.call("POST", "/v3/p/keypairs/private-key/export", &headers, Some(&export)).await.status, 200);
    let batch = json!([{"keypair": {"name": "a"}}, {"keypair": {"name": "b"}}]).to_string();
    assert_eq!(kps.call("POST", "/v3/p/keypairs/private-key/batch-export", &headers, Some(&batch)).await.status, 200);
    assert_eq!(kps.call("DELETE", "/v3/p/keypairs/b/private-key", &headers, None).await.status, 200);
    assert_eq!(kps.call("DELETE", "/v3/p/keypairs/a", &headers, None).await.status, 204);
    // A KMS call that fails after its retries.
    let created = kps.call("POST", "/v3/p/keypairs", &headers, Some(&escrow("d", kms_key))).await;
    assert_eq!(created.status, 200);
    kms.fault(json!({"status": 503, "count": 10})).await;
    let export = json!({"keypair": {"name": "d"}}).to_string();
    assert_eq!(kps.call("POST", "/v3/p/keypairs/private-key/export", &headers, Some(&export)).await.status, 503);

    let page = scrape(&kps).await;
    let custody = |action: &str| sample(&page, &format!("kps_custody_actions_total{{action=\"{action}\"}}"));
    assert_eq!(custody("escrow"), 3.0, "{page}");
    assert_eq!(custody("export_private_key"), 1.0, "{page}");
    assert_eq!(custody("batch_export"), 1.0, "{page}");
    assert_eq!(custody("clear_private_key"), 1.0, "{page}");
    assert_eq!(custody("delete_escrowed"), 1.0, "{page}");
    assert_eq!(custody("import_private_key"), 0.0, "{page}");
    assert_eq!(sample(&page, "kps_private_keys_exported_total"), 3.0, "{page}");

    let kms_calls = |op: &str| sample(&page, &format!("kps_kms_calls_total{{provider=\"huawei\",operation=\"{op}\"}}"));
    let kms_errors =
        |op: &str| sample(&page, &format!("kps_kms_errors_total{{provider=\"huawei\",operation=\"{op}\"}}"));
    assert_eq!(kms_calls("create-datakey"), 2.0, "{page}");
    assert_eq!(kms_calls("decrypt-datakey"), 3.0, "export, batch export, failed export: {page}");
    assert_eq!(kms_errors("decrypt-datakey"), 1.0, "{page}");
    assert_eq!(kms_calls("list-keys"), 1.0, "the alias is resolved once: {page}");
    assert_eq!(kms_errors("create-datakey"), 0.0, "{page}");
    assert_eq!(kms_calls("describe-key"), 0.0, "{page}");
}
