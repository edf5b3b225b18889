//! CORS for browser consoles (`cors.allowed_origins`, README "CORS"): a real preflight with every header,
//! the CORS headers on answers and error answers to a listed origin, none for an unlisted origin or with
//! CORS off; and request ids end to end (README "Request ids"): an incoming `req-<uuid>` is logged on
//! every line of its request, the KMS client's included.

use serde_json::json;

use crate::binary::Server;
use crate::kms::{KmsMock, SK};
use crate::{Answer, ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY, Kps};

const CONSOLE: &str = "https://console.example.com";

fn with_cors() -> Kps {
    Kps::with_config(|c| c.cors.allowed_origins = vec![CONSOLE.into(), "http://localhost:8080".into()])
}

/// Every header whose name starts with `access-control-`.
fn cors_headers(answer: &Answer) -> Vec<String> {
    answer
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

/// Every `Vary` value, split at commas.
fn vary(answer: &Answer) -> Vec<String> {
    answer
        .headers
        .get_all("vary")
        .iter()
        .flat_map(|value| {
            value.to_str().unwrap_or_default().split(',').map(|v| v.trim().to_owned()).collect::<Vec<_>>()
        })
        .collect()
}

/// The headers every answer to a listed origin carries.
#[track_caller]
fn assert_cors_answer(answer: &Answer, origin: &str) {
    assert_eq!(answer.header("access-control-allow-origin"), Some(origin), "status {}", answer.status);
    assert!(vary(answer).iter().any(|v| v == "Origin"), "{:?}", vary(answer));
    let exposed = answer.header("access-control-expose-headers").expect("expose headers");
    for name in [
        "OpenStack-API-Version",
        "X-OpenStack-Nova-API-Version",
        "X-OpenStack-Request-ID",
        "X-Compute-Request-Id",
        "Vary",
    ] {
        assert!(exposed.split(", ").any(|h| h == name), "{name} in {exposed}");
    }
    assert_eq!(answer.header("access-control-allow-credentials"), None, "credentials mode is not allowed");
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_needs_no_token_and_allows_the_route_and_openstack_headers() {
    let kps = with_cors();
    let preflight = [
        ("origin", CONSOLE),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-auth-token, openstack-api-version, content-type"),
    ];
    let answer = kps.call("OPTIONS", "/v2.1/os-keypairs", &preflight, None).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_cors_answer(&answer, CONSOLE);
    assert_eq!(answer.header("access-control-allow-methods"), Some("GET, HEAD, POST"), "the route's methods");
    let allowed = answer.header("access-control-allow-headers").expect("allow headers");
    for name in [
        "X-Auth-Token",
        "OpenStack-API-Version",
        "X-OpenStack-Nova-API-Version",
        "Content-Type",
        "X-OpenStack-Request-ID",
        "Authorization",
        "X-Sdk-Date",
        "X-Sdk-Content-Sha256",
        "X-Project-Id",
        "X-Domain-Id",
        "X-Security-Token",
        "Host",
    ] {
        assert!(allowed.split(", ").any(|h| h == name), "{name} in {allowed}");
    }
    assert_eq!(answer.header("access-control-max-age"), Some("3600"));
    assert!(answer.header("x-openstack-request-id").is_some_and(|id| id.starts_with("req-")));
    assert!(answer.body.is_empty());

    let v3 = [("origin", "http://localhost:8080"), ("access-control-request-method", "PUT")];
    let answer = kps.call("OPTIONS", "/v3/p/keypairs/k", &v3, None).await;
    assert_eq!(answer.status, 200);
    assert_cors_answer(&answer, "http://localhost:8080");
    assert_eq!(answer.header("access-control-allow-methods"), Some("DELETE, GET, HEAD, PUT"));
}

#[tokio::test]
async fn answers_and_error_answers_to_a_listed_origin_carry_the_cors_headers() {
    let kps = Kps::with_config(|c| {
        c.cors.allowed_origins = vec![CONSOLE.into()];
        c.limits.max_body_bytes = 1000;
    });
    let token = [("origin", CONSOLE), ("x-auth-token", "u:p"), ("content-type", "application/json")];
    let ok = kps.call("GET", "/v2.1/os-keypairs", &token, None).await;
    assert_eq!(ok.status, 200);
    assert_cors_answer(&ok, CONSOLE);
    assert!(vary(&ok).iter().any(|v| v == "OpenStack-API-Version"), "the microversion Vary stays: {:?}", vary(&ok));

    let unauthenticated = kps.call("GET", "/v2.1/os-keypairs", &[("origin", CONSOLE)], None).await;
    assert_eq!(unauthenticated.status, 401);
    let not_found = kps.call("GET", "/v2.1/os-keypairs/nope", &token, None).await;
    assert_eq!(not_found.status, 404);
    let method = kps.call("PATCH", "/v2.1/os-keypairs", &token, None).await;
    assert_eq!(method.status, 405);
    let big = format!(r#"{{"keypair": {{"name": "{}"}}}}"#, "a".repeat(2000));
    let too_large = kps.call("POST", "/v2.1/os-keypairs", &token, Some(&big)).await;
    assert_eq!(too_large.status, 413);
    let bad_version = kps
        .call("GET", "/v2.1/os-keypairs", &[token[0], token[1], ("openstack-api-version", "compute 9.9")], None)
        .await;
    assert_eq!(bad_version.status, 406);
    let needs_servers = kps.call("POST", "/v3/p/keypairs/associate", &token, Some("{}")).await;
    assert_eq!(needs_servers.status, 501);
    // A preflight for a method the route does not serve is no preflight kps answers: Nova's 405, with CORS.
    let unserved = [("origin", CONSOLE), ("access-control-request-method", "PATCH"), ("x-auth-token", "u:p")];
    let preflight_405 = kps.call("OPTIONS", "/v2.1/os-keypairs", &unserved, None).await;
    assert_eq!(preflight_405.status, 405);
    for answer in [&unauthenticated, &not_found, &method, &too_large, &bad_version, &needs_servers, &preflight_405] {
        assert_cors_answer(answer, CONSOLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_outage_answer_to_a_listed_origin_carries_the_cors_headers() {
    let kms = KmsMock::start();
    let kps = Kps::with_config(|c| {
        kms.configure(c);
        c.cors.allowed_origins = vec![CONSOLE.into()];
    });
    kms.fault(json!({"status": 503, "count": 10})).await;
    let body = escrow_body("k");
    let headers = [("origin", CONSOLE), ("x-auth-token", "u:p"), ("content-type", "application/json")];
    let answer = kps.call("POST", "/v3/p/keypairs", &headers, Some(&body)).await;
    assert_eq!(answer.status, 503);
    assert_cors_answer(&answer, CONSOLE);
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_cors_headers_and_its_preflight_is_answered_as_today() {
    let kps = with_cors();
    for origin in
        ["https://evil.example.com", "https://console.example.com.evil.example", "null", "HTTPS://CONSOLE.EXAMPLE.COM"]
    {
        let preflight = [("origin", origin), ("access-control-request-method", "GET")];
        let answer = kps.call("OPTIONS", "/", &preflight, None).await;
        answer.assert_error(405, "KPS.1011", "Method OPTIONS is not allowed for this resource.");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        assert_eq!(cors_headers(&answer), Vec::<String>::new(), "{origin}");
        assert!(!vary(&answer).iter().any(|v| v == "Origin"));
        let get = kps.call("GET", "/v2.1/os-keypairs", &[("origin", origin), ("x-auth-token", "u:p")], None).await;
        assert_eq!(get.status, 200);
        assert_eq!(cors_headers(&get), Vec::<String>::new(), "{origin}");
    }
}

#[tokio::test]
async fn with_cors_off_an_origin_changes_nothing() {
    let kps = Kps::new();
    let preflight = [("origin", CONSOLE), ("access-control-request-method", "POST"), ("x-auth-token", "u:p")];
    let answer = kps.call("OPTIONS", "/v2.1/os-keypairs", &preflight, None).await;
    answer.assert_error(405, "KPS.1011", "Method OPTIONS is not allowed for this resource.");
    assert_eq!(answer.header("allow"), Some("GET, HEAD, POST"));
    let without_origin = kps.call("OPTIONS", "/v2.1/os-keypairs", &preflight[1..], None).await;
    let names = |answer: &Answer| {
        let mut names: Vec<String> = answer.headers.keys().map(|n| n.as_str().to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&answer), names(&without_origin));
    assert_eq!(answer.body, without_origin.body);
    let unauthenticated = kps.call("OPTIONS", "/v2.1/os-keypairs", &preflight[..2], None).await;
    assert_eq!(unauthenticated.status, 401, "a preflight is authenticated like any request");
    assert_eq!(cors_headers(&unauthenticated), Vec::<String>::new());
}

fn escrow_body(name: &str) -> String {
    json!({"keypair": {"name": name, "public_key": ED25519_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": ED25519_PRIVATE_KEY,
            "encryption": {"type": "kms", "kms_key_name": "kps-escrow"}}}})
    .to_string()
}

/// An incoming `req-<uuid>` is the global request id (oslo.middleware): logged with the request's own id
/// on every line of the request — the KMS client's included — by the real binary with JSON logs; the
/// answer names the request's own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_request_id_is_logged_on_every_line_of_its_request_the_kms_clients_included() {
    let kms = KmsMock::start();
    kms.fault(json!({"status": 503, "count": 10})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr_path = dir.path().join("stderr.log");
    let env: Vec<(&'static str, String)> = kms.env().into();
    let (data, log) = (dir.path().join("data"), stderr_path.clone());
    let server = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_logging(&data, &log, "debug", &env)
    })
    .await
    .expect("start kps");
    let url = server.url.clone();
    let client = reqwest::Client::new();
    let send = |path: &str, global: &str, body: Option<String>| {
        let request = match body {
            Some(body) => client.post(format!("{url}{path}")).body(body),
            None => client.get(format!("{url}{path}")),
        };
        request
            .header("x-auth-token", "u:p")
            .header("content-type", "application/json")
            .header("x-openstack-request-id", global)
            .send()
    };

    let global = "req-6f1e3a52-9c0d-4b7e-8a21-0d5c3b9e4f17";
    let answer = send("/v3/p/keypairs", global, Some(escrow_body("k"))).await.expect("kps answers");
    assert_eq!(answer.status(), 503);
    // oslo.middleware keeps the caller's id as the global request id; the answer names this request's own.
    let own = answer.headers()["x-openstack-request-id"].to_str().expect("ascii").to_owned();
    assert!(own.starts_with("req-") && own != global, "{own}");
    assert_eq!(answer.headers()["x-compute-request-id"].to_str().ok(), Some(own.as_str()));

    let mut bogus_answers = Vec::new();
    for bogus in ["req-6F1E3A52-9C0D-4B7E-8A21-0D5C3B9E4F17", "6f1e3a52-9c0d-4b7e-8a21-0d5c3b9e4f17", "req-1 x"] {
        let answer = send("/v3/p/keypairs", bogus, None).await.expect("kps answers");
        assert_eq!(answer.status(), 200);
        let id = answer.headers()["x-openstack-request-id"].to_str().expect("ascii").to_owned();
        assert_ne!(id, bogus);
        bogus_answers.push((bogus, id));
    }
    tokio::task::spawn_blocking(move || server.stop()).await.expect("stop kps");

    let text = std::fs::read_to_string(&stderr_path).expect("stderr");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    // A line's request id and global id: from its span, or from the closing `request` line's fields.
    let ids = |line: &serde_json::Value| {
        let from = if line["span"]["name"] == "request" { &line["span"] } else { &line["fields"] };
        (from["request_id"].as_str().map(str::to_owned), from["global_request_id"].as_str().map(str::to_owned))
    };
    let of_request: Vec<&serde_json::Value> =
        lines.iter().filter(|line| ids(line).0.as_deref() == Some(own.as_str())).collect();
    let kms_lines = of_request.iter().filter(|line| line["fields"]["message"] == "KMS call failed").count();
    assert!(kms_lines >= 2, "the KMS client's retries are logged in the request's span: {text}");
    assert!(of_request.iter().any(|line| line["fields"]["message"] == "request"), "{text}");
    for line in &of_request {
        assert_eq!(ids(line).1.as_deref(), Some(global), "{line}");
    }
    for line in text.lines() {
        assert!(!line.contains(global) || line.contains(&own), "the global id on another request's line: {line}");
        for secret in [SK, "PRIVATE KEY", "u:p"] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
    // Anything but req-<lowercase uuid> is ignored, as oslo.middleware ignores it.
    for (bogus, id) in bogus_answers {
        let closing = lines.iter().find(|line| ids(line).0.as_deref() == Some(id.as_str())).expect("logged");
        assert_eq!(ids(closing).1, None, "{bogus}");
        assert!(!text.replace(global, "").contains(bogus), "{bogus} was logged");
    }
}
