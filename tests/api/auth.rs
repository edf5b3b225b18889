//! Authentication modes and policy through the API (interface.md "Authentication modes", "Policy";
//! errors.md §3.11): `static` tokens, `keystone` against a fake Keystone on 127.0.0.1:0, `policy.file`
//! overrides and aliases, and the same settings through the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use kps::config::{AuthMode, Config};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::binary::{Server, free_port};
use super::{ED25519_VECTOR, Kps};

const MISSING: &str = "Authentication required";
const INVALID: &str = "Invalid authentication credentials";

fn write_secret(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn import_body(name: &str) -> String {
    json!({"keypair": {"name": name, "public_key": ED25519_VECTOR}}).to_string()
}

fn denied(action: &str) -> String {
    format!("Policy doesn't allow {action} to be performed.")
}

/// The state kps would start with, or the startup error as text.
fn startup(adjust: impl FnOnce(&mut Config)) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.keygen.rsa_pool_size = 0;
    adjust(&mut config);
    let store = kps::store::memory::MemoryStore::new();
    kps::state(&config, Arc::new(store)).map(drop).map_err(|e| e.to_string())
}

// -------------------------------------------------------------------------------------------------------
// static

fn tokens_file(dir: &Path, mode: u32) -> PathBuf {
    let entry = |token: &str, user: &str, project: &str, roles: &str| {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        format!(
            "[[tokens]]\nsha256 = \"{hash}\"\nuser_id = \"{user}\"\nproject_id = \"{project}\"\nroles = [{roles}]\n"
        )
    };
    let text = entry("alice-secret", "alice", "p-42", "\"member\"")
        + &entry("bob-secret", "bob", "p-42", "")
        + &entry("root-secret", "root", "p-0", "\"admin\"");
    write_secret(dir, "tokens.toml", &text, mode)
}

fn static_kps(dir: &Path) -> Kps {
    let file = tokens_file(dir, 0o600);
    Kps::with_config(|c| {
        c.auth.mode = AuthMode::Static;
        c.auth.tokens_file = Some(file);
    })
}

#[tokio::test]
async fn static_tokens_authenticate_as_their_caller() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = static_kps(secrets.path());
    let created = kps.nova("POST", "/v2.1/p-42/os-keypairs", "alice-secret", None, Some(&import_body("a"))).await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let shown = kps.nova("GET", "/v2.1/p-42/os-keypairs/a", "alice-secret", None, None).await;
    assert_eq!(shown.json()["keypair"]["user_id"], "alice");
    // Bob has no roles and his own (empty) list; the project in the URL must be the token's.
    let listed = kps.nova("GET", "/v2.1/p-42/os-keypairs", "bob-secret", None, None).await;
    assert_eq!(listed.json()["keypairs"], json!([]));
    let wrong_project = kps.nova("GET", "/v2.1/p-1/os-keypairs", "bob-secret", None, None).await;
    assert_eq!(wrong_project.json()["error_code"], "KPS.1005");
    // The admin token acts on alice's key pairs from 2.10.
    let by_admin = kps.nova("GET", "/v2.1/os-keypairs/a?user_id=alice", "root-secret", Some("2.10"), None).await;
    assert_eq!(by_admin.json()["keypair"]["name"], "a");
    let by_bob = kps.nova("GET", "/v2.1/os-keypairs/a?user_id=alice", "bob-secret", Some("2.10"), None).await;
    by_bob.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:show"));
}

#[tokio::test]
async fn static_mode_refuses_missing_unknown_and_malformed_tokens() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let kps = static_kps(secrets.path());
    let missing = kps.call("GET", "/v2.1/os-keypairs", &[], None).await;
    missing.assert_error(401, "KPS.2001", MISSING);
    assert_eq!(missing.header("www-authenticate"), None, "only keystone mode sends a challenge");
    // Unknown tokens, the hash instead of the token, a noauth-style token, an empty one.
    let hash = hex::encode(Sha256::digest(b"alice-secret"));
    for token in ["carol-secret", hash.as_str(), "alice:p-42", "alice-secret ", ""] {
        let answer = kps.call("GET", "/v2.1/os-keypairs", &[("x-auth-token", token)], None).await;
        answer.assert_error(401, "KPS.2002", INVALID);
        assert_eq!(answer.header("www-authenticate"), None);
    }
    // A header value that is not visible ASCII (obs-text bytes).
    let answer = kps.call("GET", "/v2.1/os-keypairs", &[("x-auth-token", "alice-secr\u{e9}t")], None).await;
    answer.assert_error(401, "KPS.2002", INVALID);
    // Authentication comes before routing (errors.md §4 step 2).
    let unrouted = kps.call("GET", "/v2.1/nowhere", &[("x-auth-token", "nope")], None).await;
    unrouted.assert_error(401, "KPS.2002", INVALID);
}

#[test]
fn static_tokens_file_must_be_a_private_secret_file() {
    let secrets = tempfile::tempdir().expect("tempdir");
    for (mode, allow_group, ok) in
        [(0o600, false, true), (0o640, false, false), (0o640, true, true), (0o644, true, false)]
    {
        let file = tokens_file(secrets.path(), mode);
        let result = startup(|c| {
            c.auth.mode = AuthMode::Static;
            c.auth.tokens_file = Some(file.clone());
            c.secrets.allow_group_readable = allow_group;
        });
        assert_eq!(result.is_ok(), ok, "{mode:o} allow_group={allow_group}: {result:?}");
        if let Err(error) = result {
            assert!(error.contains(&file.display().to_string()) && error.contains(&format!("{mode:04o}")), "{error}");
        }
    }
    let missing = startup(|c| c.auth.mode = AuthMode::Static).expect_err("no tokens file");
    assert!(missing.contains("auth.tokens_file"), "{missing}");
    let garbage = write_secret(secrets.path(), "garbage.toml", "[[tokens]]\nsha256 = \"xyz\"\n", 0o600);
    let invalid = startup(|c| {
        c.auth.mode = AuthMode::Static;
        c.auth.tokens_file = Some(garbage);
    })
    .expect_err("invalid file");
    assert!(invalid.contains("garbage.toml"), "{invalid}");
}

// -------------------------------------------------------------------------------------------------------
// keystone

/// A Keystone that knows a few tokens and counts validation requests.
struct FakeKeystone {
    url: String,
    calls: Arc<AtomicUsize>,
}

impl FakeKeystone {
    async fn start() -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let router = Router::new().route("/v3/auth/tokens", get(validate)).with_state(Arc::clone(&calls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await.expect("fake keystone") });
        Self { url, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn kps(&self, ttl_s: u64) -> Kps {
        let url = self.url.clone();
        Kps::with_config(|c| {
            c.auth.mode = AuthMode::Keystone;
            c.auth.keystone_url = Some(url);
            c.auth.keystone_cache_ttl_s = ttl_s;
        })
    }
}

fn token_body(user: &str, project: Option<&str>, roles: &[&str], expires_at: &str) -> serde_json::Value {
    let mut token = json!({
        "expires_at": expires_at,
        "issued_at": "2020-01-01T00:00:00.000000Z",
        "methods": ["password"],
        "user": {"id": user, "name": user, "domain": {"id": "default", "name": "Default"}},
        "roles": roles.iter().map(|r| json!({"id": format!("id-{r}"), "name": r})).collect::<Vec<_>>(),
    });
    if let Some(project) = project {
        token["project"] = json!({"id": project, "name": "demo", "domain": {"id": "default", "name": "Default"}});
    }
    json!({ "token": token })
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Keystone's answer for the token in `X-Subject-Token`, authenticated by the same token in `X-Auth-Token`.
async fn validate(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> axum::response::Response {
    calls.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (auth, subject) = (header("x-auth-token"), header("x-subject-token"));
    if auth != subject {
        return (StatusCode::UNAUTHORIZED, "X-Auth-Token must authenticate the request").into_response();
    }
    let later = "2999-01-01T00:00:00.000000Z";
    let body = match subject.as_str() {
        "ks-alice" => token_body("u-alice", Some("p-42"), &["member", "reader"], later),
        "ks-slow" => {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            token_body("u-slow", Some("p-42"), &["member"], later)
        }
        "ks-bob" => token_body("u-bob", Some("p-42"), &["member"], later),
        "ks-admin" => token_body("u-root", Some("p-0"), &["admin", "member"], later),
        "ks-expired-body" => token_body("u-alice", Some("p-42"), &["member"], "2001-01-01T00:00:00.000000Z"),
        "ks-unscoped" => token_body("u-alice", None, &[], later),
        "ks-broken" => return (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable").into_response(),
        "ks-garbled" => return (StatusCode::OK, "<html>proxy error</html>").into_response(),
        _ => {
            let error = json!({"error": {"code": 404, "message": "Could not find token.", "title": "Not Found"}});
            return (StatusCode::NOT_FOUND, [JSON], error.to_string()).into_response();
        }
    };
    (StatusCode::OK, [JSON, ("x-subject-token", subject.as_str())], body.to_string()).into_response()
}

#[tokio::test]
async fn keystone_tokens_give_user_project_and_roles() {
    let keystone = FakeKeystone::start().await;
    let kps = keystone.kps(60);
    let created = kps.nova("POST", "/v2.1/p-42/os-keypairs", "ks-alice", Some("2.10"), Some(&import_body("a"))).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(created.json()["keypair"]["user_id"], "u-alice");
    let wrong_project = kps.nova("GET", "/v2.1/p-0/os-keypairs", "ks-alice", None, None).await;
    assert_eq!(wrong_project.json()["error_code"], "KPS.1005");
    // Role names from the token: admin acts on other users' key pairs.
    let by_admin = kps.nova("GET", "/v2.1/os-keypairs?user_id=u-alice", "ks-admin", Some("2.10"), None).await;
    assert_eq!(by_admin.json()["keypairs"][0]["keypair"]["name"], "a");
    let by_bob = kps.nova("GET", "/v2.1/os-keypairs?user_id=u-alice", "ks-bob", Some("2.10"), None).await;
    by_bob.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:index"));
}

#[tokio::test]
async fn keystone_401s_carry_the_keystone_challenge() {
    let keystone = FakeKeystone::start().await;
    let kps = keystone.kps(60);
    let challenge = format!("Keystone uri=\"{}\"", keystone.url);
    let missing = kps.call("GET", "/v2.1/os-keypairs", &[], None).await;
    missing.assert_error(401, "KPS.2001", MISSING);
    assert_eq!(missing.header("www-authenticate"), Some(challenge.as_str()));
    for token in ["ks-unknown", "ks-expired-body", "ks-unscoped"] {
        let answer = kps.nova("GET", "/v2.1/os-keypairs", token, None, None).await;
        answer.assert_error(401, "KPS.2002", INVALID);
        assert_eq!(answer.header("www-authenticate"), Some(challenge.as_str()), "{token}");
    }
    let ok = kps.nova("GET", "/v2.1/os-keypairs", "ks-alice", None, None).await;
    assert_eq!((ok.status.as_u16(), ok.header("www-authenticate")), (200, None));
    let forbidden = kps.nova("GET", "/v2.1/os-keypairs?user_id=x", "ks-alice", Some("2.10"), None).await;
    assert_eq!((forbidden.status.as_u16(), forbidden.header("www-authenticate")), (403, None));
}

#[tokio::test]
async fn keystone_results_are_cached_for_the_ttl() {
    let keystone = FakeKeystone::start().await;
    let kps = keystone.kps(60);
    for _ in 0..3 {
        let answer = kps.nova("GET", "/v2.1/os-keypairs", "ks-alice", None, None).await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(keystone.calls(), 1, "one validation, then the cache");
    kps.nova("GET", "/v2.1/os-keypairs", "ks-bob", None, None).await;
    assert_eq!(keystone.calls(), 2, "each token is validated once");
    // Invalid tokens are remembered too, so a bad token does not hit Keystone on every request.
    for _ in 0..3 {
        kps.nova("GET", "/v2.1/os-keypairs", "ks-unknown", None, None).await.assert_error(401, "KPS.2002", INVALID);
    }
    assert_eq!(keystone.calls(), 3);

    let uncached = keystone.kps(0);
    for _ in 0..2 {
        assert_eq!(uncached.nova("GET", "/v2.1/os-keypairs", "ks-alice", None, None).await.status, 200);
    }
    assert_eq!(keystone.calls(), 5, "keystone_cache_ttl_s = 0 validates every request");
}

#[tokio::test]
async fn keystone_cache_hits_and_misses_are_on_the_metrics_page() {
    let keystone = FakeKeystone::start().await;
    let kps = keystone.kps(60);
    for token in ["ks-alice", "ks-alice", "ks-alice", "ks-unknown", "ks-unknown"] {
        kps.nova("GET", "/v2.1/os-keypairs", token, None, None).await;
    }
    let page = String::from_utf8(kps.call("GET", "/metrics", &[], None).await.body).expect("utf-8");
    assert!(page.contains("kps_cache_hits_total{cache=\"keystone_tokens\"} 3\n"), "{page}");
    assert!(page.contains("kps_cache_misses_total{cache=\"keystone_tokens\"} 2\n"), "{page}");
    assert_eq!(keystone.calls(), 2, "a miss is a Keystone call");
}

#[tokio::test]
async fn concurrent_requests_with_one_new_token_make_one_keystone_call() {
    let keystone = FakeKeystone::start().await;
    let kps = Arc::new(keystone.kps(60));
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let kps = Arc::clone(&kps);
            tokio::spawn(async move { kps.nova("GET", "/v2.1/os-keypairs", "ks-slow", None, None).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request"), 200);
    }
    assert_eq!(keystone.calls(), 1, "one validation shared by every waiting request");
}

#[tokio::test]
async fn keystone_failures_are_503_and_not_cached() {
    const UNAVAILABLE: &str = "The Keystone service is temporarily unavailable.";
    let keystone = FakeKeystone::start().await;
    let kps = keystone.kps(60);
    for _ in 0..2 {
        let answer = kps.nova("GET", "/v2.1/os-keypairs", "ks-broken", None, None).await;
        answer.assert_error(503, "KPS.2005", UNAVAILABLE);
        assert_eq!(answer.header("www-authenticate"), None);
    }
    assert_eq!(keystone.calls(), 4, "a 5xx is retried once and never cached");
    let garbled = kps.nova("GET", "/v2.1/os-keypairs", "ks-garbled", None, None).await;
    garbled.assert_error(503, "KPS.2005", UNAVAILABLE);

    let port = free_port(); // nothing listens there any more
    let unreachable = Kps::with_config(|c| {
        c.auth.mode = AuthMode::Keystone;
        c.auth.keystone_url = Some(format!("http://127.0.0.1:{port}/v3"));
    });
    let answer = unreachable.nova("GET", "/v2.1/os-keypairs", "ks-alice", None, None).await;
    answer.assert_error(503, "KPS.2005", UNAVAILABLE);
    // No token at all is still a 401: Keystone is not asked.
    unreachable.call("GET", "/v2.1/os-keypairs", &[], None).await.assert_error(401, "KPS.2001", MISSING);
}

#[test]
fn keystone_mode_needs_an_http_or_https_url() {
    let missing = startup(|c| c.auth.mode = AuthMode::Keystone).expect_err("no url");
    assert!(missing.contains("auth.keystone_url"), "{missing}");
    startup(|c| {
        c.auth.mode = AuthMode::Keystone;
        c.auth.keystone_url = Some("https://keystone.example.com:5000/v3".into());
    })
    .expect("https Keystone URLs are accepted (rustls client with the system's CA roots)");
    for url in ["keystone:5000", "https://", "ftp://keystone.example.com"] {
        let error = startup(|c| {
            c.auth.mode = AuthMode::Keystone;
            c.auth.keystone_url = Some(url.into());
        })
        .expect_err(url);
        assert!(error.contains(url), "{error}");
    }
}

// -------------------------------------------------------------------------------------------------------
// policy.file

fn with_policy(dir: &Path, policy: &str) -> Kps {
    let file = write_secret(dir, "policy.toml", policy, 0o644);
    Kps::with_config(|c| c.policy.file = Some(file))
}

#[tokio::test]
async fn policy_file_overrides_one_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kps = with_policy(dir.path(), "\"os_compute_api:os-keypairs:index\" = \"admin\"\n");
    kps.import("alice:p", "a", ED25519_VECTOR).await;
    let list = kps.nova("GET", "/v2.1/p/os-keypairs", "alice:p:member", None, None).await;
    list.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:index"));
    // The legacy v2 route is the same action.
    let legacy = kps.nova("GET", "/v2/p/os-keypairs", "alice:p", None, None).await;
    legacy.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:index"));
    let by_admin = kps.nova("GET", "/v2.1/p/os-keypairs", "root:p:admin", None, None).await;
    assert_eq!(by_admin.status, 200);
    // The other actions keep their defaults.
    let show = kps.nova("GET", "/v2.1/p/os-keypairs/a", "alice:p", None, None).await;
    assert_eq!(show.status, 200);
}

#[tokio::test]
async fn ecs_aliases_set_the_nova_action_unless_it_is_set_explicitly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kps = with_policy(
        dir.path(),
        "\"ecs:serverKeypairs:list\" = \"role:lister\"\n\
         \"ecs:serverKeypairs:delete\" = \"none\"\n\
         \"os_compute_api:os-keypairs:delete\" = \"admin or owner\"\n\
         \"ecs:serverKeypairs:create\" = \"admin\"\n",
    );
    let list = kps.nova("GET", "/v2.1/os-keypairs", "alice:p", None, None).await;
    list.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:index"));
    let list = kps.nova("GET", "/v2.1/os-keypairs", "alice:p:lister", None, None).await;
    assert_eq!(list.status, 200);
    let create = kps.nova("POST", "/v2.1/os-keypairs", "alice:p", None, Some(&import_body("a"))).await;
    create.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:create"));
    kps.import("root:p:admin", "a", ED25519_VECTOR).await;
    // The explicit Nova delete rule wins over the alias.
    let delete = kps.nova("DELETE", "/v2.1/os-keypairs/a", "root:p:admin", None, None).await;
    assert_eq!(delete.status, 202);
}

#[tokio::test]
async fn record_terms_are_checked_once_the_key_pair_is_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kps = with_policy(
        dir.path(),
        "\"os_compute_api:os-keypairs:show\" = \"creator\"\n\
         \"os_compute_api:os-keypairs:delete\" = \"project_member and role:cleaner\"\n",
    );
    kps.import("bob:p", "k", ED25519_VECTOR).await;
    let own = kps.nova("GET", "/v2.1/os-keypairs/k", "bob:p", None, None).await;
    assert_eq!(own.status, 200);
    // `creator`: not even an admin, once the record shows who created it.
    let by_admin = kps.nova("GET", "/v2.1/os-keypairs/k?user_id=bob", "root:p:admin", Some("2.10"), None).await;
    by_admin.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:show"));
    // A name that does not exist is denied too, not a 404 telling which names exist.
    let absent = kps.nova("GET", "/v2.1/os-keypairs/nope?user_id=bob", "root:p:admin", Some("2.10"), None).await;
    absent.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:show"));
    let absent_own = kps.nova("GET", "/v2.1/os-keypairs/nope", "bob:p", None, None).await;
    absent_own.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:show"));
    // `project_member`: the record was created in p.
    let cleaner_elsewhere =
        kps.nova("DELETE", "/v2.1/os-keypairs/k?user_id=bob", "carol:q:cleaner", Some("2.10"), None).await;
    cleaner_elsewhere.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:delete"));
    let no_role = kps.nova("DELETE", "/v2.1/os-keypairs/k", "bob:p", Some("2.10"), None).await;
    no_role.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:delete"));
    let cleaner = kps.nova("DELETE", "/v2.1/os-keypairs/k?user_id=bob", "carol:p:cleaner", Some("2.10"), None).await;
    assert_eq!(cleaner.status, 204);
}

#[tokio::test]
async fn default_policy_denies_other_users_without_revealing_names() {
    let kps = Kps::new();
    kps.import("bob:p", "k", ED25519_VECTOR).await;
    for name in ["k", "nope"] {
        let path = format!("/v2.1/os-keypairs/{name}?user_id=bob");
        let show = kps.nova("GET", &path, "alice:p", Some("2.10"), None).await;
        show.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:show"));
        let delete = kps.nova("DELETE", &path, "alice:p", Some("2.10"), None).await;
        delete.assert_error(403, "KPS.2003", &denied("os_compute_api:os-keypairs:delete"));
    }
    let own_absent = kps.nova("GET", "/v2.1/os-keypairs/nope", "alice:p", None, None).await;
    own_absent.assert_error(404, "KPS.1601", "Keypair nope not found for user alice");
}

#[tokio::test]
async fn admin_backup_follows_its_policy_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kps = with_policy(dir.path(), "\"kps:admin:backup\" = \"role:backup\"\n");
    let admin = kps.call("POST", "/admin/v1/backup", &[("x-auth-token", "root:p:admin")], None).await;
    admin.assert_error(403, "KPS.2003", &denied("kps:admin:backup"));
    let operator = kps.call("POST", "/admin/v1/backup", &[("x-auth-token", "ops:p:backup")], None).await;
    assert_eq!(operator.status, 200);
    let default = Kps::new();
    let member = default.call("POST", "/admin/v1/backup", &[("x-auth-token", "alice:p:member")], None).await;
    member.assert_error(403, "KPS.2003", &denied("kps:admin:backup"));
}

#[test]
fn policy_file_errors_stop_startup_naming_the_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expected) in [
        ("\"os_compute_api:os-keypairs:list\" = \"admin\"", "unknown action \"os_compute_api:os-keypairs:list\""),
        ("\"kps:keypairs:export_private_key\" = \"admin or\"", "for kps:keypairs:export_private_key"),
        ("\"ecs:serverKeypairs:get\" = \"owner and (admin)\"", "parentheses are not supported"),
    ] {
        let file = write_secret(dir.path(), "policy.toml", text, 0o644);
        let error = startup(|c| c.policy.file = Some(file.clone())).expect_err(text);
        assert!(error.contains(expected) && error.contains("policy.toml"), "{text}: {error}");
    }
}

// -------------------------------------------------------------------------------------------------------
// the real binary

fn config_file(dir: &Path, auth: &str, policy: Option<&Path>) -> PathBuf {
    let mut text = format!("[auth]\n{auth}\n");
    if let Some(policy) = policy {
        text += &format!("[policy]\nfile = \"{}\"\n", policy.display());
    }
    write_secret(dir, "kps.toml", &text, 0o600)
}

#[test]
fn the_binary_serves_static_tokens_with_a_policy_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = tokens_file(dir.path(), 0o600);
    let policy = write_secret(dir.path(), "policy.toml", "\"ecs:serverKeypairs:list\" = \"admin\"\n", 0o644);
    let auth = format!("mode = \"static\"\ntokens_file = \"{}\"", tokens.display());
    let config = config_file(dir.path(), &auth, Some(&policy));
    let server = Server::start_with_config(&dir.path().join("data"), &config);
    let client = reqwest::blocking::Client::new();
    let get = |token: &str| {
        let response = client
            .get(format!("{}/v2.1/os-keypairs", server.url))
            .header("x-auth-token", token)
            .send()
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().expect("json"))
    };
    assert_eq!(get("root-secret").0, 200);
    let (status, body) = get("alice-secret");
    assert_eq!((status, body["error_msg"].as_str()), (403, Some(denied("os_compute_api:os-keypairs:index").as_str())));
    let (status, body) = get("alice:p-42");
    assert_eq!((status, body["error_code"].as_str()), (401, Some("KPS.2002")));
    assert!(server.stop().success());
}

#[test]
fn the_binary_refuses_to_start_with_a_readable_tokens_file_or_a_bad_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_kps"))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
            .arg(dir.path().join("data"))
            .env("KPS_CONFIG", config)
            .output()
            .expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tokens = tokens_file(dir.path(), 0o644);
    let auth = format!("mode = \"static\"\ntokens_file = \"{}\"", tokens.display());
    let stderr = run(&config_file(dir.path(), &auth, None));
    assert!(stderr.contains("tokens.toml") && stderr.contains("0644"), "{stderr}");

    let policy = write_secret(dir.path(), "policy.toml", "\"kps:admin:backup\" = \"root\"\n", 0o644);
    let stderr = run(&config_file(dir.path(), "mode = \"noauth\"", Some(&policy)));
    assert!(stderr.contains("kps:admin:backup") && stderr.contains("unknown term `root`"), "{stderr}");
}
