//! The check order of errors.md §4 before any handler runs: request ids, body size, authentication,
//! routing (404/405/HEAD), content type and JSON parse, project match.

use crate::Kps;

#[tokio::test]
async fn every_response_carries_one_request_id_in_three_headers() {
    let kps = Kps::new();
    for (method, path, token) in [
        ("GET", "/", None),
        ("GET", "/v2.1/os-keypairs", Some("u:p")),
        ("GET", "/nope", None),
        ("GET", "/v2.1/os-keypairs", None),
    ] {
        let headers: Vec<(&str, &str)> = token.map(|t| vec![("x-auth-token", t)]).unwrap_or_default();
        let answer = kps.call(method, path, &headers, None).await;
        let id = answer.header("x-openstack-request-id").expect("request id").to_owned();
        assert!(id.starts_with("req-") && id.len() == 40, "{id}");
        assert_eq!(answer.header("x-compute-request-id"), Some(id.as_str()));
        assert_eq!(answer.header("x-request-id"), Some(id.as_str()));
    }
}

#[tokio::test]
async fn a_caller_supplied_request_id_is_not_echoed() {
    let kps = Kps::new();
    let supplied = "req-00000000-0000-0000-0000-000000000000";
    let answer = kps.call("GET", "/", &[("x-openstack-request-id", supplied)], None).await;
    assert_ne!(answer.header("x-openstack-request-id"), Some(supplied));
}

#[tokio::test]
async fn missing_and_invalid_tokens_are_401() {
    let kps = Kps::new();
    let answer = kps.call("GET", "/v2.1/os-keypairs", &[], None).await;
    answer.assert_error(401, "KPS.2001", "Authentication required");
    for token in ["nonsense", "u:", "u:p:r:x"] {
        let answer = kps.call("GET", "/v2.1/os-keypairs", &[("x-auth-token", token)], None).await;
        answer.assert_error(401, "KPS.2002", "Invalid authentication credentials");
    }
    assert_eq!(kps.call("GET", "/v2.1/os-keypairs", &[], None).await.header("www-authenticate"), None);
}

#[tokio::test]
async fn authentication_comes_before_routing_on_api_paths() {
    let kps = Kps::new();
    kps.call("GET", "/v2.1/no-such-route", &[], None).await.assert_error(401, "KPS.2001", "Authentication required");
    let routed = kps.call("GET", "/v2.1/no-such-route", &[("x-auth-token", "u:p")], None).await;
    routed.assert_error(404, "KPS.1010", "The resource could not be found.");
}

#[tokio::test]
async fn unknown_paths_and_trailing_slashes_are_json_404() {
    let kps = Kps::new();
    for path in ["/nope", "/v2.1/os-keypairs/", "/v2.1/p/os-keypairs/", "/v2.1/os-keypairs/k/", "/v2/os-keypairs/"] {
        let answer = kps.call("GET", path, &[("x-auth-token", "u:p"), ("accept", "text/html")], None).await;
        answer.assert_error(404, "KPS.1010", "The resource could not be found.");
    }
}

#[tokio::test]
async fn unsupported_methods_are_405_with_allow() {
    let kps = Kps::new();
    let table = [
        ("PUT", "/v2.1/os-keypairs", "GET, HEAD, POST"),
        ("DELETE", "/v2.1/p/os-keypairs", "GET, HEAD, POST"),
        ("POST", "/v2.1/os-keypairs/k", "DELETE, GET, HEAD"),
        ("OPTIONS", "/v2.1/os-keypairs/k", "DELETE, GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("OPTIONS", "/v2.1/", "GET, HEAD"),
    ];
    for (method, path, allow) in table {
        let answer = kps.call(method, path, &[("x-auth-token", "u:p")], None).await;
        answer.assert_error(405, "KPS.1011", &format!("Method {method} is not allowed for this resource."));
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
    }
}

#[tokio::test]
async fn head_answers_as_get() {
    let kps = Kps::new();
    kps.import("u:p", "k", crate::ED25519_VECTOR).await;
    let get = kps.call("GET", "/v2.1/os-keypairs/k", &[("x-auth-token", "u:p")], None).await;
    let head = kps.call("HEAD", "/v2.1/os-keypairs/k", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(head.status, get.status);
    assert_eq!(head.header("content-type"), get.header("content-type"));
    let missing = kps.call("HEAD", "/v2.1/os-keypairs/nope", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn body_size_is_checked_before_authentication() {
    let kps = Kps::with_config(|c| c.limits.max_body_bytes = 1000);
    let big = format!(r#"{{"keypair": {{"name": "{}"}}}}"#, "a".repeat(2000));
    let answer = kps.call("POST", "/v2.1/os-keypairs", &[("content-type", "application/json")], Some(&big)).await;
    answer.assert_error(413, "KPS.1008", "Request is too large.");
    assert!(answer.json()["overLimit"].get("retryAfter").is_none());
    let at_limit = format!(r#"{{"keypair": {{"name": "{}"}}}}"#, "a".repeat(900));
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&at_limit)).await;
    assert_eq!(answer.status, 400, "under the limit the body is read and validated");
}

#[tokio::test]
async fn default_body_limit_is_114688_bytes() {
    let kps = Kps::new();
    let name = "a".repeat(114_688 - r#"{"keypair": {"name": ""}}"#.len());
    let exact = format!(r#"{{"keypair": {{"name": "{name}"}}}}"#);
    assert_eq!(exact.len(), 114_688);
    assert_eq!(kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&exact)).await.status, 400);
    let over = format!(r#"{{"keypair": {{"name": "{name}a"}}}}"#);
    assert_eq!(kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&over)).await.status, 413);
}

#[tokio::test]
async fn foreign_content_types_are_415() {
    let kps = Kps::new();
    let body = r#"{"keypair": {"name": "k", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"}}"#;
    let headers = |ct| vec![("x-auth-token", "u:p"), ("content-type", ct)];
    for ct in ["application/xml", "application/x-www-form-urlencoded"] {
        let answer = kps.call("POST", "/v2.1/os-keypairs", &headers(ct), Some(body)).await;
        answer.assert_error(415, "KPS.1009", "Unsupported Content-Type");
    }
    let answer = kps.call("POST", "/v2.1/os-keypairs", &headers("application/json;charset=UTF-8"), Some(body)).await;
    assert_eq!(answer.status, 200);
    let answer = kps.call("POST", "/v2.1/os-keypairs", &[("x-auth-token", "u:p")], Some(body)).await;
    assert_eq!(answer.status, 409, "no content type is JSON too");
}

#[tokio::test]
async fn body_that_is_not_json_is_400_malformed() {
    let kps = Kps::new();
    for body in ["{", "not json", "\u{feff}{}"] {
        let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(body)).await;
        answer.assert_error(400, "KPS.1002", "Malformed request body");
    }
}

#[tokio::test]
async fn project_in_url_must_be_the_callers() {
    let kps = Kps::new();
    let message = "Malformed request URL: URL's project_id 'other' doesn't match Context's project_id 'p'";
    for (method, path) in [
        ("GET", "/v2.1/other/os-keypairs"),
        ("GET", "/v2.1/other/os-keypairs/k"),
        ("DELETE", "/v2.1/other/os-keypairs/k"),
    ] {
        kps.nova(method, path, "u:p:admin", None, None).await.assert_error(400, "KPS.1005", message);
    }
    // Before the schema: a bad body in another project is still a project error.
    let answer = kps.nova("POST", "/v2.1/other/os-keypairs", "u:p", None, Some("[]")).await;
    answer.assert_error(400, "KPS.1005", message);
    // After JSON parsing: a body that is not JSON is reported first.
    let answer = kps.nova("POST", "/v2.1/other/os-keypairs", "u:p", None, Some("{")).await;
    assert_eq!(answer.json()["error_code"], "KPS.1002");
}

#[tokio::test]
async fn healthz_answers_ok_without_a_token() {
    let kps = Kps::new();
    let answer = kps.call("GET", "/healthz", &[], None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_answers_ready_without_a_token_and_moves_to_admin_listen() {
    let kps = Kps::new();
    let answer = kps.call("GET", "/readyz", &[], None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({"status": "ready"}));
    let split = Kps::with_config(|c| c.admin_listen = Some("127.0.0.1:0".into()));
    split.call("GET", "/readyz", &[], None).await.assert_error(404, "KPS.1010", "The resource could not be found.");
}
