//! Version documents and microversion negotiation (nova-keypairs.md §3, §4).

use crate::Kps;

#[tokio::test]
async fn version_list_needs_no_token_and_has_no_microversion_headers() {
    let kps = Kps::new();
    let answer = kps.call("GET", "/", &[], None).await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["versions"][0]["id"], "v2.0");
    assert_eq!(body["versions"][0]["links"][0]["href"], "http://kps.test:8774/v2/");
    assert_eq!(body["versions"][1]["id"], "v2.1");
    assert_eq!(body["versions"][1]["version"], "2.96");
    assert_eq!(body["versions"][1]["min_version"], "2.1");
    assert_eq!(answer.header("openstack-api-version"), None);
    assert_eq!(answer.header("vary"), None);
}

#[tokio::test]
async fn v21_document_echoes_the_version_with_and_without_trailing_slash() {
    let kps = Kps::new();
    for path in ["/v2.1", "/v2.1/"] {
        let answer = kps.call("GET", path, &[("openstack-api-version", "compute latest")], None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.json()["version"]["links"][0]["href"], "http://kps.test:8774/v2.1/");
        assert_eq!(answer.header("openstack-api-version"), Some("compute 2.96"));
        assert_eq!(answer.header("x-openstack-nova-api-version"), Some("2.96"));
    }
}

#[tokio::test]
async fn v2_document_is_deprecated_and_ignores_version_headers() {
    let kps = Kps::new();
    for path in ["/v2", "/v2/"] {
        let answer = kps.call("GET", path, &[("openstack-api-version", "compute 2.200")], None).await;
        assert_eq!(answer.status, 200, "{path}");
        let body = answer.json();
        assert_eq!(body["version"]["id"], "v2.0");
        assert_eq!(body["version"]["status"], "DEPRECATED");
        assert_eq!(body["version"]["media-types"][0]["type"], "application/vnd.openstack.compute+json;version=2");
        assert_eq!(answer.header("openstack-api-version"), None);
    }
}

#[tokio::test]
async fn public_url_replaces_the_host_header_in_links() {
    let kps = Kps::with_config(|c| c.public_url = Some("https://kps.example.com/".into()));
    let answer = kps.call("GET", "/", &[], None).await;
    assert_eq!(answer.json()["versions"][1]["links"][0]["href"], "https://kps.example.com/v2.1/");
}

#[tokio::test]
async fn microversion_headers_are_echoed_on_success_and_error() {
    let kps = Kps::new();
    let ok = kps.nova("GET", "/v2.1/os-keypairs", "u:p", Some("2.35"), None).await;
    assert_eq!(ok.header("openstack-api-version"), Some("compute 2.35"));
    let vary: Vec<_> = ok.headers.get_all("vary").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(vary, ["OpenStack-API-Version", "X-OpenStack-Nova-API-Version"]);
    let missing = kps.nova("GET", "/v2.1/os-keypairs/nope", "u:p", Some("2.35"), None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-openstack-nova-api-version"), Some("2.35"));
}

#[tokio::test]
async fn no_version_header_means_2_1() {
    let kps = Kps::new();
    let answer = kps.call("GET", "/v2.1/os-keypairs", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(answer.header("openstack-api-version"), Some("compute 2.1"));
}

#[tokio::test]
async fn unsupported_version_is_406_and_echoes_the_request() {
    let kps = Kps::new();
    let answer = kps.nova("GET", "/v2.1/os-keypairs", "u:p", Some("2.200"), None).await;
    answer.assert_error(
        406,
        "KPS.1007",
        "Version 2.200 is not supported by the API. Minimum is 2.1 and maximum is 2.96.",
    );
    assert!(answer.json().get("computeFault").is_some());
    assert_eq!(answer.header("openstack-api-version"), Some("compute 2.200"));
    assert_eq!(answer.header("x-openstack-nova-api-version"), Some("2.200"));
}

#[tokio::test]
async fn malformed_version_is_400_without_version_headers() {
    let kps = Kps::new();
    for value in ["2.01", "LATEST", "2", "abc"] {
        let answer = kps.nova("GET", "/v2.1/os-keypairs", "u:p", Some(value), None).await;
        answer.assert_error(
            400,
            "KPS.1006",
            &format!("API Version String {value} is of invalid format. Must be of format MajorNum.MinorNum."),
        );
        assert_eq!(answer.header("openstack-api-version"), None, "{value}");
        assert_eq!(answer.header("vary"), None, "{value}");
    }
}

#[tokio::test]
async fn legacy_header_is_used_when_the_new_one_names_no_compute_version() {
    let kps = Kps::new();
    let answer = kps
        .call(
            "GET",
            "/v2.1/os-keypairs",
            &[
                ("x-auth-token", "u:p"),
                ("openstack-api-version", "volume 3.0"),
                ("x-openstack-nova-api-version", "2.10"),
            ],
            None,
        )
        .await;
    assert_eq!(answer.header("openstack-api-version"), Some("compute 2.10"));
}

#[tokio::test]
async fn legacy_v2_ignores_version_headers_and_behaves_as_2_1() {
    let kps = Kps::new();
    let body = r#"{"keypair": {"name": "  legacy key  ", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4", "bogus": 1}, "extra": true}"#;
    let answer = kps.nova("POST", "/v2/p/os-keypairs", "u:p", Some("2.200"), Some(body)).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("openstack-api-version"), None);
    assert_eq!(answer.json()["keypair"]["name"], "legacy key");
    assert!(answer.json()["keypair"].get("type").is_none());
    let deleted = kps.nova("DELETE", "/v2/p/os-keypairs/legacy%20key", "u:p", Some("2.2"), None).await;
    assert_eq!(deleted.status, 202);
}

#[tokio::test]
async fn legacy_v2_without_a_project_id_answers_as_with_one() {
    let kps = Kps::new();
    for root in ["/v2/os-keypairs", "/v2/p/os-keypairs"] {
        let body = r#"{"keypair": {"name": "  legacy key  ", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4", "bogus": 1}}"#;
        let created = kps.nova("POST", root, "u:p", Some("2.200"), Some(body)).await;
        assert_eq!(created.status, 200, "{root}: {}", String::from_utf8_lossy(&created.body));
        assert_eq!(created.header("openstack-api-version"), None, "{root}");
        assert_eq!(created.json()["keypair"]["name"], "legacy key", "{root}");
        let list = kps.nova("GET", root, "u:p", None, None).await;
        assert_eq!(list.json()["keypairs"][0]["keypair"]["name"], "legacy key", "{root}");
        assert!(list.json()["keypairs"][0]["keypair"].get("type").is_none(), "{root}");
        let show = kps.nova("GET", &format!("{root}/legacy%20key"), "u:p", None, None).await;
        assert_eq!(show.status, 200, "{root}");
        assert_eq!(show.json()["keypair"]["name"], "legacy key", "{root}");
        let head = kps.nova("HEAD", &format!("{root}/legacy%20key"), "u:p", None, None).await;
        assert_eq!(head.status, 200, "{root}");
        let deleted = kps.nova("DELETE", &format!("{root}/legacy%20key"), "u:p", None, None).await;
        assert_eq!(deleted.status, 202, "{root}");
        let gone = kps.nova("GET", &format!("{root}/legacy%20key"), "u:p", None, None).await;
        assert_eq!(gone.status, 404, "{root}");
    }
    let unauthenticated = kps.call("GET", "/v2/os-keypairs", &[], None).await;
    assert_eq!(unauthenticated.status, 401);
    let wrong_method = kps.nova("PUT", "/v2/os-keypairs", "u:p", None, None).await;
    assert_eq!((wrong_method.status.as_u16(), wrong_method.header("allow")), (405, Some("GET, HEAD, POST")));
}
