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

/// Checks the text format's structure: every family is announced once by `# HELP` then `# TYPE`, before
/// its samples, and every sample belongs to the family announced last (histograms by their `_bucket`,
/// `_sum` and `_count` series); names follow the conventions (counters end in `_total`).
fn assert_well_formed(page: &str) {
    let mut announced = std::collections::HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut lines = page.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().expect("name").to_owned();
            let kind = lines.next().and_then(|l| l.strip_prefix(&format!("# TYPE {name} "))).expect("TYPE after HELP");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(kind != "counter" || name.ends_with("_total"), "counter {name} must end in _total");
            assert!(announced.insert(name.clone()), "{name} announced twice");
            current = Some((name, kind.to_owned()));
            continue;
        }
        let series = line.split(['{', ' ']).next().expect("series");
        let (family, kind) = current.as_ref().unwrap_or_else(|| panic!("sample before any family: {line}"));
        let fits = if kind == "histogram" {
            ["_bucket", "_sum", "_count"].iter().any(|suffix| series == format!("{family}{suffix}"))
        } else {
            series == family
        };
        assert!(fits, "{line} is not a sample of {family}");
        let value = line.rsplit(' ').next().expect("value");
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn process_metrics_are_read_at_scrape_time() {
    let kps = Kps::new();
    let page = scrape(&kps).await;
    assert_well_formed(&page);
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(page.contains(&format!("# TYPE {name} gauge\n")), "{name}: {page}");
        assert!(sample(&page, name) > 0.0, "{name}: {page}");
    }
    assert!(page.contains("# TYPE process_cpu_seconds_total counter\n"), "{page}");
    assert!(sample(&page, "process_resident_memory_bytes") <= sample(&page, "process_virtual_memory_bytes"));
    assert!(sample(&page, "process_open_fds") <= sample(&page, "process_max_fds"));
    // Without TLS there is nothing to reload, and no family for it.
    assert!(!page.contains("kps_tls_reloads_total"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_call_latency_is_a_histogram_per_operation() {
    let kms = KmsMock::start();
    let kps = Kps::with_kms_mock(&kms);
    let headers = [("x-auth-token", "u:p"), ("content-type", "application/json")];
    for name in ["a", "b"] {
        let body = json!({"keypair": {"name": name, "key_protection": {"private_key": ED25519_PRIVATE_KEY,
            "encryption": {"type": "kms", "kms_key_name": "kps-escrow"}}, "public_key": ED25519_PUBLIC_KEY.trim_end()}});
        let created = kps.call("POST", "/v3/p/keypairs", &headers, Some(&body.to_string())).await;
        assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    }
    let page = scrape(&kps).await;
    assert_well_formed(&page);
    assert!(page.contains("# TYPE kps_kms_request_duration_seconds histogram\n"), "{page}");
    let series = |suffix: &str, operation: &str, le: Option<&str>| {
        let le = le.map(|le| format!(",le=\"{le}\"")).unwrap_or_default();
        let name =
            format!("kps_kms_request_duration_seconds_{suffix}{{provider=\"huawei\",operation=\"{operation}\"{le}}}");
        sample(&page, &name)
    };
    assert_eq!(series("count", "create-datakey", None), 2.0, "{page}");
    assert_eq!(series("bucket", "create-datakey", Some("+Inf")), 2.0, "{page}");
    assert_eq!(series("count", "list-keys", None), 1.0, "the alias is resolved once: {page}");
    assert_eq!(series("count", "decrypt-datakey", None), 0.0, "{page}");
    assert!(series("sum", "create-datakey", None) > 0.0, "{page}");
    assert!(page.contains("le=\"0.005\"") && page.contains("le=\"10\""), "5 ms to 10 s buckets: {page}");
    // The second create found the key in the resolution cache.
    assert_eq!(sample(&page, r#"kps_cache_misses_total{cache="kms_keys"}"#), 1.0, "{page}");
    assert_eq!(sample(&page, r#"kps_cache_hits_total{cache="kms_keys"}"#), 1.0, "{page}");
}

#[tokio::test]
async fn list_page_cache_hits_and_misses_are_counted() {
    let kps = Kps::new();
    kps.import("u:p", "one", crate::ED25519_VECTOR).await;
    let hits_and_misses = |page: &str| {
        (
            sample(page, r#"kps_cache_hits_total{cache="list_pages"}"#),
            sample(page, r#"kps_cache_misses_total{cache="list_pages"}"#),
        )
    };
    let before = scrape(&kps).await;
    assert!(before.contains("# TYPE kps_cache_hits_total counter\n"), "{before}");
    assert_eq!(hits_and_misses(&before), (0.0, 0.0), "{before}");
    for _ in 0..3 {
        assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await.status, 200);
    }
    assert_eq!(hits_and_misses(&scrape(&kps).await), (2.0, 1.0), "one miss fills the cache, then hits");
    // A write makes the cached page stale: the next list misses.
    kps.import("u:p", "two", crate::ED25519_VECTOR).await;
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await.status, 200);
    assert_eq!(hits_and_misses(&scrape(&kps).await), (2.0, 2.0));
    // No KMS, no Keystone: only the list page cache is reported.
    let page = scrape(&kps).await;
    assert!(!page.contains("cache=\"kms_keys\"") && !page.contains("cache=\"keystone_tokens\""), "{page}");
}
