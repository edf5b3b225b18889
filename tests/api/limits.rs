//! Per-caller limits: 429 KPS.1015 with `Retry-After` and `retryAfter`, checked right after authentication,
//! per `(user_id, project_id)`, never for unauthenticated paths.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::kms::KmsMock;
use crate::{ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, Kps};

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after() {
    let kps = Kps::with_config(|c| c.limits.per_caller_rps = 1);
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await.status, 200);
    let refused = kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await;
    refused.assert_error(429, "KPS.1015", "Rate limit exceeded, retry after 1 seconds.");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["overLimit"]["retryAfter"], "1");
    // V3 and unrouted API paths count too: the check comes before routing.
    let v3 = kps.call("GET", "/v3/p/keypairs", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(v3.json()["error_code"], "KPS.1015");
    let unrouted = kps.call("GET", "/v2.1/nothing-here", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(unrouted.json()["error_code"], "KPS.1015");

    // Another user, or the same user in another project, is another caller.
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "v:p", None, None).await.status, 200);
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:q", None, None).await.status, 200);
    // Authentication comes first; unauthenticated paths are never limited.
    kps.nova("GET", "/v2.1/os-keypairs", "bad", None, None).await.assert_error(
        401,
        "KPS.2002",
        "Invalid authentication credentials",
    );
    for _ in 0..3 {
        assert_eq!(kps.call("GET", "/", &[("x-auth-token", "u:p")], None).await.status, 200);
        assert_eq!(kps.call("GET", "/healthz", &[], None).await.status, 200);
    }

    let metrics = String::from_utf8(kps.call("GET", "/metrics", &[], None).await.body).expect("utf-8");
    assert!(metrics.contains("kps_http_limited_total{limit=\"rps\"} 3\n"), "{metrics}");
    assert!(
        metrics.contains(r#"kps_http_requests_total{route="nova_keypairs",method="GET",status="429"} 1"#),
        "{metrics}"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await.status, 200, "the bucket refilled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_with_too_many_requests_in_flight_gets_429() {
    let kms = KmsMock::start();
    let kps = Arc::new(Kps::with_config(|c| {
        c.limits.per_caller_concurrency = 1;
        kms.configure(c);
    }));
    // The next KMS call takes 3 s: the escrow below stays in flight that long.
    kms.fault(json!({"delay_ms": 3000, "count": 1})).await;
    let slow = {
        let kps = Arc::clone(&kps);
        tokio::spawn(async move {
            let body = json!({"keypair": {"name": "slow", "public_key": ED25519_PUBLIC_KEY.trim_end(),
                "key_protection": {"private_key": ED25519_PRIVATE_KEY,
                    "encryption": {"type": "kms", "kms_key_name": "kps-escrow"}}}});
            kps.call(
                "POST",
                "/v3/p/keypairs",
                &[("x-auth-token", "u:p"), ("content-type", "application/json")],
                Some(&body.to_string()),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await;
    refused.assert_error(429, "KPS.1015", "Rate limit exceeded, retry after 1 seconds.");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "other:p", None, None).await.status, 200);

    let created = slow.await.expect("task");
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await.status, 200, "the slot was released");
    let metrics = String::from_utf8(kps.call("GET", "/metrics", &[], None).await.body).expect("utf-8");
    assert!(metrics.contains("kps_http_limited_total{limit=\"concurrency\"} 1\n"), "{metrics}");
}

#[test]
fn the_limits_are_accepted_at_startup() {
    let config = kps::config::Config {
        limits: kps::config::LimitsConfig { per_caller_concurrency: 8, per_caller_rps: 20, ..Default::default() },
        ..Default::default()
    };
    config.validate().expect("per-caller limits are implemented");
}
