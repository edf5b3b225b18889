//! List: wrapping, order, per-version fields, paging with limit/marker and `keypairs_links`
//! (nova-keypairs.md §6.2).

use serde_json::json;

use crate::{ED25519_VECTOR, Kps};

async fn with_keys(names: &[&str]) -> Kps {
    let kps = Kps::with_config(|c| c.quota.key_pairs = -1);
    for name in names {
        kps.import("u:p", name, ED25519_VECTOR).await;
    }
    kps
}

fn names(answer: &crate::Answer) -> Vec<String> {
    answer.json()["keypairs"]
        .as_array()
        .expect("keypairs")
        .iter()
        .map(|item| item["keypair"]["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn list_items_are_wrapped_sorted_by_name_bytes_and_have_version_fields() {
    let kps = with_keys(&["b", "a b", "B", "a"]).await;
    let answer = kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await;
    assert_eq!(names(&answer), ["B", "a", "a b", "b"]);
    let item = &answer.json()["keypairs"][0]["keypair"];
    let mut keys: Vec<&str> = item.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["fingerprint", "name", "public_key"]);
    assert!(answer.json().get("keypairs_links").is_none());
    let at_22 = kps.nova("GET", "/v2.1/os-keypairs", "u:p", Some("2.2"), None).await;
    assert_eq!(at_22.json()["keypairs"][0]["keypair"]["type"], "ssh");
}

#[tokio::test]
async fn paging_walks_every_key_once_with_next_links() {
    let kps = with_keys(&["k1", "k2", "k3", "k4", "k5"]).await;
    let first = kps.nova("GET", "/v2.1/p/os-keypairs?limit=2", "u:p", Some("2.35"), None).await;
    assert_eq!(names(&first), ["k1", "k2"]);
    assert_eq!(
        first.json()["keypairs_links"],
        json!([{"rel": "next", "href": "http://kps.test:8774/v2.1/p/os-keypairs?limit=2&marker=k2"}])
    );
    let second = kps.nova("GET", "/v2.1/p/os-keypairs?limit=2&marker=k2", "u:p", Some("2.35"), None).await;
    assert_eq!(names(&second), ["k3", "k4"]);
    let third = kps.nova("GET", "/v2.1/p/os-keypairs?limit=2&marker=k4", "u:p", Some("2.35"), None).await;
    assert_eq!(names(&third), ["k5"]);
    assert!(third.json().get("keypairs_links").is_none(), "a short page has no next link");
}

#[tokio::test]
async fn next_link_query_is_built_as_nova_builds_it() {
    let kps = with_keys(&["a", "b"]).await;
    let at_292 = serde_json::json!({"keypair": {"name": "c@d", "public_key": ED25519_VECTOR}}).to_string();
    assert_eq!(kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.92"), Some(&at_292)).await.status, 201);
    let table = [
        ("/v2.1/os-keypairs?limit=1", "http://kps.test:8774/v2.1/os-keypairs?limit=1&marker=a"),
        ("/v2.1/os-keypairs?user_id=u&limit=1", "http://kps.test:8774/v2.1/os-keypairs?limit=1&user_id=u&marker=a"),
        ("/v2.1/os-keypairs?marker=a&limit=1", "http://kps.test:8774/v2.1/os-keypairs?limit=1&marker=b"),
        ("/v2.1/os-keypairs?limit=5&limit=1", "http://kps.test:8774/v2.1/os-keypairs?limit=5&marker=a"),
        ("/v2.1/os-keypairs?marker=b&limit=1", "http://kps.test:8774/v2.1/os-keypairs?limit=1&marker=c%40d"),
    ];
    for (path, href) in table {
        let answer = kps.nova("GET", path, "u:p", Some("2.35"), None).await;
        assert_eq!(answer.json()["keypairs_links"][0]["href"], href, "{path}");
    }
}

#[tokio::test]
async fn limit_zero_is_an_empty_page_without_links() {
    let kps = with_keys(&["a"]).await;
    let answer = kps.nova("GET", "/v2.1/os-keypairs?limit=0", "u:p", Some("2.35"), None).await;
    assert_eq!(answer.json(), json!({"keypairs": []}));
}

#[tokio::test]
async fn limit_is_capped_at_1000_from_2_35_and_lists_before_it_return_every_key_pair() {
    let kps = Kps::with_config(|c| c.quota.key_pairs = -1);
    let ops: Vec<_> = (0..1001).map(|i| format!("k{i:04}")).collect();
    for name in &ops {
        kps.import("u:p", name, ED25519_VECTOR).await;
    }
    let answer = kps.nova("GET", "/v2.1/os-keypairs?limit=5000", "u:p", Some("2.35"), None).await;
    assert_eq!(names(&answer).len(), 1000);
    assert!(answer.json()["keypairs_links"][0]["href"].as_str().expect("href").ends_with("limit=5000&marker=k0999"));
    let unbounded = kps.nova("GET", "/v2.1/os-keypairs", "u:p", Some("2.35"), None).await;
    assert_eq!(names(&unbounded).len(), 1000);
    assert!(unbounded.json()["keypairs_links"][0]["href"].as_str().expect("href").ends_with("?marker=k0999"));

    // Before 2.35 (and on legacy v2) there is no paging: every key pair, not the first 1000. Domain keys of
    // the project merge in across the service's internal pages too.
    for name in ["k0999a", "zz"] {
        let body = json!({"keypair": {"name": name, "scope": "domain", "public_key": ED25519_VECTOR}}).to_string();
        let created = kps.call("POST", "/v3/p/keypairs", &[("x-auth-token", "other:p")], Some(&body)).await;
        assert_eq!(created.status, 200);
    }
    let mut expected = ops.clone();
    expected.extend(["k0999a".to_owned(), "zz".to_owned()]);
    expected.sort();
    for (path, version) in [
        ("/v2.1/os-keypairs", Some("2.34")),
        ("/v2.1/p/os-keypairs", None),
        ("/v2/os-keypairs", None),
        ("/v2/p/os-keypairs", None),
    ] {
        let old = kps.nova("GET", path, "u:p", version, None).await;
        assert_eq!(names(&old), expected, "{path} {version:?}");
        assert!(old.json().get("keypairs_links").is_none());
    }
}

#[tokio::test]
async fn paging_parameters_are_ignored_before_2_35() {
    let kps = with_keys(&["a", "b"]).await;
    let answer = kps.nova("GET", "/v2.1/os-keypairs?limit=1&marker=zzz", "u:p", Some("2.34"), None).await;
    assert_eq!(names(&answer), ["a", "b"]);
}

#[tokio::test]
async fn bad_limits_and_unknown_markers_are_400() {
    let kps = with_keys(&["a"]).await;
    for limit in ["-1", "abc", "1.5"] {
        let answer = kps.nova("GET", &format!("/v2.1/os-keypairs?limit={limit}"), "u:p", Some("2.35"), None).await;
        answer.assert_error(
            400,
            "KPS.1004",
            &format!("Invalid input for query parameters limit. Value: {limit}. '{limit}' does not match '^[0-9]*$'"),
        );
    }
    let answer = kps.nova("GET", "/v2.1/os-keypairs?marker=nope", "u:p", Some("2.35"), None).await;
    answer.assert_error(400, "KPS.1603", "Marker nope could not be found.");
}

#[tokio::test]
async fn unknown_list_parameters_are_400_from_2_75() {
    let kps = with_keys(&["a"]).await;
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs?sort=name", "u:p", Some("2.74"), None).await.status, 200);
    let answer = kps.nova("GET", "/v2.1/os-keypairs?sort=name", "u:p", Some("2.75"), None).await;
    answer.assert_error(400, "KPS.1003", "Additional properties are not allowed ('sort' was unexpected)");
    let allowed = kps.nova("GET", "/v2.1/os-keypairs?limit=1&marker=a&user_id=u", "u:p", Some("2.75"), None).await;
    assert_eq!(allowed.status, 200);
}

#[tokio::test]
async fn next_link_drops_parameters_the_list_does_not_accept() {
    let kps = with_keys(&["a", "b"]).await;
    let answer = kps.nova("GET", "/v2.1/os-keypairs?limit=1&foo=bar", "u:p", Some("2.35"), None).await;
    assert_eq!(answer.json()["keypairs_links"][0]["href"], "http://kps.test:8774/v2.1/os-keypairs?limit=1&marker=a");
}

/// Lists are served from the page cache (`cache.list_pages_mb`) until a write to one of the owners they
/// show: every write that changes what a list shows is visible in the very next list, whoever made it.
#[tokio::test]
async fn cached_list_pages_never_outlive_a_write() {
    for cache_mb in [32, 0] {
        let kps = Kps::with_config(|c| {
            c.quota.key_pairs = -1;
            c.cache.list_pages_mb = cache_mb;
        });
        let list = |token: &'static str| {
            let kps = &kps;
            async move { names(&kps.nova("GET", "/v2.1/os-keypairs?limit=10", token, Some("2.35"), None).await) }
        };
        kps.import("alice:p", "a1", ED25519_VECTOR).await;
        assert_eq!(list("alice:p").await, ["a1"]);
        assert_eq!(list("alice:p").await, ["a1"], "a repeated page (served from the cache when enabled)");

        kps.import("alice:p", "a2", ED25519_VECTOR).await;
        assert_eq!(list("alice:p").await, ["a1", "a2"], "cache {cache_mb}: own create");
        kps.import("bob:p", "b1", ED25519_VECTOR).await;
        assert_eq!(list("alice:p").await, ["a1", "a2"], "another user's key is not shown");

        let domain = json!({"keypair": {"name": "team", "scope": "domain", "public_key": ED25519_VECTOR}});
        let created = kps
            .call(
                "POST",
                "/v3/p/keypairs",
                &[("X-Auth-Token", "bob:p"), ("Content-Type", "application/json")],
                Some(&domain.to_string()),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.json());
        assert_eq!(list("alice:p").await, ["a1", "a2", "team"], "cache {cache_mb}: a domain key of the project");
        assert_eq!(list("carol:other").await, Vec::<String>::new(), "not in another project");

        assert_eq!(kps.nova("DELETE", "/v2.1/os-keypairs/a1", "alice:p", None, None).await.status, 202);
        assert_eq!(list("alice:p").await, ["a2", "team"], "cache {cache_mb}: own delete");
        let deleted = kps.call("DELETE", "/v3/p/keypairs/team", &[("X-Auth-Token", "bob:p")], None).await;
        assert_eq!(deleted.status, 204);
        assert_eq!(list("alice:p").await, ["a2"], "cache {cache_mb}: the domain key's deletion by its creator");

        let at_22 = kps.nova("GET", "/v2.1/os-keypairs", "alice:p", Some("2.2"), None).await;
        assert_eq!(at_22.json()["keypairs"][0]["keypair"]["type"], "ssh", "pages are cached per microversion");
        let at_21 = kps.nova("GET", "/v2.1/os-keypairs", "alice:p", Some("2.1"), None).await;
        assert!(at_21.json()["keypairs"][0]["keypair"].get("type").is_none());
    }
}
