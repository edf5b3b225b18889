//! `keystone` mode: the caller's `X-Auth-Token` is validated with Keystone v3 `GET /v3/auth/tokens`,
//! sending the token both as `X-Auth-Token` and as `X-Subject-Token`, so no service credentials are needed
//! (a token may always validate itself).
//!
//! Outcomes follow keystonemiddleware (and its self-validating variant): 200 with a project-scoped token →
//! the caller; any other 4xx, an expired token or a token without a project → 401 KPS.2002; a 5xx, a
//! connection failure, a timeout or an unparsable answer (after one retry) → 503 KPS.2005 "The Keystone
//! service is temporarily unavailable.". Valid and invalid results are cached by SHA-256 of the token (the
//! token itself is never kept) for `auth.keystone_cache_ttl_s`, never past the token's `expires_at`, valid and
//! invalid tokens in two bounded caches (a flood of bad tokens cannot push out good ones); concurrent first
//! validations of one token make one Keystone call; "unavailable" is never cached. Lookups are counted for
//! `GET /metrics` (a hit needs no Keystone call of its own) while the cache is on.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Caller;
use crate::api::error::ApiError;
use crate::metrics::CacheCounts;
use crate::tls::CaBundle;

/// Cached valid tokens at most, and as many invalid ones in a cache of their own.
const CACHE_CAPACITY: u64 = 10_000;
/// Attempts per validation when Keystone fails (connection error, timeout, 5xx).
const ATTEMPTS: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// 503 KPS.2005: Keystone could not answer (keystonemiddleware's status and text).
pub fn keystone_unavailable() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "KPS.2005", "The Keystone service is temporarily unavailable.")
}

pub struct Keystone {
    /// `<keystone_url>/v3/auth/tokens?nocatalog`.
    tokens_url: String,
    client: reqwest::Client,
    cache: TokenCache,
}

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone").field("tokens_url", &self.tokens_url).finish_non_exhaustive()
    }
}

impl Keystone {
    /// `url` is the Keystone base URL, with or without a trailing `/v3`.
    pub fn new(url: &str, cache_ttl: Duration) -> Result<Self, String> {
        Self::new_trusting(url, cache_ttl, None)
    }

    /// [`Keystone::new`] whose HTTPS trusts exactly `roots` (`tls.ca_file`) when given, else the system's roots.
    pub fn new_trusting(url: &str, cache_ttl: Duration, roots: Option<&CaBundle>) -> Result<Self, String> {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(str::is_empty) {
            return Err("must be an http:// or https:// URL".into());
        }
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        let builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT);
        let client = crate::tls::trusting(builder, roots)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            tokens_url: format!("{base}/v3/auth/tokens?nocatalog"),
            client,
            cache: TokenCache::new(cache_ttl, CACHE_CAPACITY),
        })
    }

    /// Validations answered by the token cache and validations that asked Keystone.
    pub fn cache_counts(&self) -> &CacheCounts {
        &self.cache.counts
    }

    pub async fn validate(&self, token: &str) -> Result<Caller, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.cache.get_or_fetch(key, self.fetch(token)).await.map_err(|rejected| match rejected {
            Rejected::Invalid => ApiError::invalid_credentials(),
            Rejected::Unavailable => keystone_unavailable(),
        })
    }

    /// `Some((caller, time left until expires_at))` for a valid token, `None` for an invalid one.
    async fn fetch(&self, token: &str) -> Result<Option<(Caller, Option<Duration>)>, ApiError> {
        let mut value = HeaderValue::from_str(token).map_err(|_| ApiError::invalid_credentials())?;
        value.set_sensitive(true);
        let mut last_problem = String::new();
        for _ in 0..ATTEMPTS {
            let sent = self
                .client
                .get(&self.tokens_url)
                .header("x-auth-token", value.clone())
                .header("x-subject-token", value.clone())
                .header("accept", "application/json")
                .send()
                .await;
            let response = match sent {
                Ok(response) if response.status().is_server_error() => {
                    last_problem = format!("status {}", response.status().as_u16());
                    continue;
                }
                Ok(response) => response,
                Err(error) => {
                    last_problem = error.without_url().to_string();
                    continue;
                }
            };
            if response.status() != StatusCode::OK {
                tracing::info!(status = response.status().as_u16(), "Keystone rejected a token");
                return Ok(None);
            }
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(error) => {
                    last_problem = error.without_url().to_string();
                    continue;
                }
            };
            return match serde_json::from_slice::<TokenBody>(&body) {
                Ok(body) => Ok(body.token.into_caller()),
                Err(error) => {
                    tracing::error!(%error, "Keystone answered a token validation with an unreadable body");
                    Err(keystone_unavailable())
                }
            };
        }
        tracing::error!(problem = last_problem, url = self.tokens_url, "Keystone is unavailable");
        Err(keystone_unavailable())
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: Option<String>,
    user: Option<Named>,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: Option<String>,
    name: Option<String>,
}

impl TokenInfo {
    /// The caller of a valid, project-scoped, unexpired token, with the time the token has left.
    fn into_caller(self) -> Option<(Caller, Option<Duration>)> {
        let lifetime = match &self.expires_at {
            None => None,
            Some(text) => {
                let Ok(expires) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                else {
                    tracing::info!(expires_at = text, "Keystone token with an unreadable expires_at");
                    return None;
                };
                let left = expires - time::OffsetDateTime::now_utc();
                Some(Duration::try_from(left).ok().filter(|d| !d.is_zero())?)
            }
        };
        let user_id = self.user?.id.filter(|id| !id.is_empty())?;
        // Nova needs a project-scoped token; unscoped and domain-scoped tokens do not name one.
        let project_id = self.project?.id.filter(|id| !id.is_empty())?;
        let roles = self.roles.into_iter().filter_map(|role| role.name).collect();
        Some((Caller { user_id, project_id, roles }, lifetime))
    }
}

/// Validation results by token hash: valid and invalid tokens in caches of their own, so that a flood of
/// bad tokens can only push out other bad tokens, never a valid one. Both are bounded (moka: TinyLFU
/// admission, O(1) eviction, no global lock), and concurrent first validations of one token share one
/// Keystone call.
struct TokenCache {
    ttl: Duration,
    valid: moka::future::Cache<[u8; 32], ValidToken>,
    invalid: moka::future::Cache<[u8; 32], ()>,
    counts: CacheCounts,
}

/// A valid token's caller and how long it may be used: the TTL, never past the token's `expires_at`.
#[derive(Clone)]
struct ValidToken {
    caller: Caller,
    keep: Duration,
}

/// Each valid token expires after its own `keep`.
struct KeepFor;

impl moka::Expiry<[u8; 32], ValidToken> for KeepFor {
    fn expire_after_create(&self, _: &[u8; 32], token: &ValidToken, _: Instant) -> Option<Duration> {
        Some(token.keep)
    }
}

/// Why a validation produced no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejected {
    /// Keystone said the token is not valid (cached in `invalid`).
    Invalid,
    /// Keystone could not answer (never cached).
    Unavailable,
}

impl TokenCache {
    fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            ttl,
            valid: moka::future::Cache::builder().max_capacity(capacity).expire_after(KeepFor).build(),
            invalid: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            counts: CacheCounts::default(),
        }
    }

    /// The cached result for `key`, or the result of `fetch`, run once for all concurrent callers of one key.
    /// `fetch` answers `Ok(Some((caller, time left until expires_at)))` for a valid token, `Ok(None)` for an
    /// invalid one.
    async fn get_or_fetch<F>(&self, key: [u8; 32], fetch: F) -> Result<Caller, Rejected>
    where
        F: Future<Output = Result<Option<(Caller, Option<Duration>)>, ApiError>>,
    {
        if self.ttl.is_zero() {
            return match fetch.await {
                Ok(Some((caller, _))) => Ok(caller),
                Ok(None) => Err(Rejected::Invalid),
                Err(_) => Err(Rejected::Unavailable),
            };
        }
        if self.invalid.contains_key(&key) {
            self.counts.hit();
            return Err(Rejected::Invalid);
        }
        // Set when this caller's own fetch runs; a caller served by the cache or another's fetch got a hit.
        let fetched_here = std::sync::atomic::AtomicBool::new(false);
        let fetched = self.valid.try_get_with(key, async {
            fetched_here.store(true, std::sync::atomic::Ordering::Relaxed);
            match fetch.await {
                Ok(Some((caller, lifetime))) => {
                    let keep = lifetime.map_or(self.ttl, |left| left.min(self.ttl));
                    Ok(ValidToken { caller, keep })
                }
                Ok(None) => {
                    self.invalid.insert(key, ()).await;
                    Err(Rejected::Invalid)
                }
                Err(_) => Err(Rejected::Unavailable),
            }
        });
        let answer = fetched.await.map(|token| token.caller).map_err(|rejected| *rejected);
        if fetched_here.load(std::sync::atomic::Ordering::Relaxed) {
            self.counts.miss();
        } else {
            self.counts.hit();
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn caller(user: &str) -> Caller {
        Caller { user_id: user.into(), project_id: "p".into(), roles: vec![] }
    }

    fn token_info(json: serde_json::Value) -> Option<(Caller, Option<Duration>)> {
        serde_json::from_value::<TokenBody>(json).expect("token body").token.into_caller()
    }

    #[test]
    fn the_caller_comes_from_user_project_and_role_names() {
        let (caller, lifetime) = token_info(serde_json::json!({"token": {
            "expires_at": "2999-01-01T00:00:00.000000Z",
            "user": {"id": "u-1", "name": "alice", "domain": {"id": "default"}},
            "project": {"id": "p-1", "name": "demo"},
            "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "admin"}],
        }}))
        .expect("valid");
        assert_eq!(caller.user_id, "u-1");
        assert_eq!(caller.project_id, "p-1");
        assert_eq!(caller.roles, ["member", "admin"]);
        assert!(caller.is_admin());
        assert!(lifetime.expect("expires_at") > Duration::from_secs(3600));
    }

    #[test]
    fn expired_unscoped_and_unreadable_tokens_are_invalid() {
        let user = serde_json::json!({"id": "u-1"});
        let project = serde_json::json!({"id": "p-1"});
        for token in [
            serde_json::json!({"expires_at": "2001-01-01T00:00:00Z", "user": user, "project": project}),
            serde_json::json!({"expires_at": "tomorrow", "user": user, "project": project}),
            serde_json::json!({"user": user, "domain": {"id": "default"}}),
            serde_json::json!({"user": user}),
            serde_json::json!({"project": project}),
        ] {
            assert!(token_info(serde_json::json!({ "token": token })).is_none(), "{token}");
        }
        let (_, lifetime) = token_info(serde_json::json!({"token": {"user": user, "project": project}})).expect("ok");
        assert_eq!(lifetime, None, "no expires_at: the cache TTL alone applies");
    }

    type Fetched = Result<Option<(Caller, Option<Duration>)>, ApiError>;

    /// A fetch that must not run: the answer has to come from the cache.
    async fn not_fetched() -> Fetched {
        panic!("the cache should have answered")
    }

    async fn valid(user: &str, lifetime: Option<Duration>) -> Fetched {
        Ok(Some((caller(user), lifetime)))
    }

    #[tokio::test]
    async fn cache_entries_expire_with_the_ttl_or_the_token() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        assert_eq!(cache.get_or_fetch([1; 32], valid("a", None)).await, Ok(caller("a")));
        assert_eq!(cache.get_or_fetch([1; 32], not_fetched()).await, Ok(caller("a")));
        // A token that expires before the TTL is used until its expires_at only.
        let short = Some(Duration::from_millis(100));
        assert_eq!(cache.get_or_fetch([2; 32], valid("b", short)).await, Ok(caller("b")));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cache.get_or_fetch([2; 32], valid("b2", None)).await, Ok(caller("b2")), "fetched again");
        // Invalid tokens are remembered, unavailability is not.
        assert_eq!(cache.get_or_fetch([3; 32], async { Ok(None) }).await, Err(Rejected::Invalid));
        assert_eq!(cache.get_or_fetch([3; 32], not_fetched()).await, Err(Rejected::Invalid));
        let down = async { Err(keystone_unavailable()) };
        assert_eq!(cache.get_or_fetch([4; 32], down).await, Err(Rejected::Unavailable));
        assert_eq!(cache.get_or_fetch([4; 32], valid("d", None)).await, Ok(caller("d")), "not cached");
        assert_eq!((cache.counts.hits(), cache.counts.misses()), (2, 6));

        let off = TokenCache::new(Duration::ZERO, 10);
        assert_eq!(off.get_or_fetch([1; 32], valid("a", None)).await, Ok(caller("a")));
        assert_eq!(off.get_or_fetch([1; 32], valid("a2", None)).await, Ok(caller("a2")), "TTL 0: no cache");
    }

    #[tokio::test]
    async fn a_flood_of_invalid_tokens_never_evicts_a_valid_one() {
        let cache = TokenCache::new(Duration::from_secs(60), 50);
        assert_eq!(cache.get_or_fetch([0; 32], valid("a", None)).await, Ok(caller("a")));
        for i in 1..=2000u32 {
            let mut key = [0xff; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            assert_eq!(cache.get_or_fetch(key, async { Ok(None) }).await, Err(Rejected::Invalid));
        }
        cache.valid.run_pending_tasks().await;
        cache.invalid.run_pending_tasks().await;
        assert!(cache.invalid.entry_count() <= 50, "bounded: {}", cache.invalid.entry_count());
        assert_eq!(cache.get_or_fetch([0; 32], not_fetched()).await, Ok(caller("a")), "the valid token stayed");
    }

    #[tokio::test]
    async fn concurrent_first_validations_of_one_token_make_one_call() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(60), 10));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                tokio::spawn(async move {
                    let fetch = async {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        valid("a", None).await
                    };
                    cache.get_or_fetch([7; 32], fetch).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), Ok(caller("a")));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn the_tokens_url_accepts_a_base_with_or_without_v3() {
        for url in ["http://ks:5000", "http://ks:5000/", "http://ks:5000/v3", "http://ks:5000/v3/"] {
            let keystone = Keystone::new(url, Duration::from_secs(60)).expect(url);
            assert_eq!(keystone.tokens_url, "http://ks:5000/v3/auth/tokens?nocatalog", "{url}");
        }
        let https = Keystone::new("https://ks:5000/v3", Duration::from_secs(60)).expect("https");
        assert_eq!(https.tokens_url, "https://ks:5000/v3/auth/tokens?nocatalog");
        for url in ["ks:5000", "ftp://ks", "http://", "https://"] {
            assert!(Keystone::new(url, Duration::from_secs(60)).is_err(), "{url}");
        }
    }
}
