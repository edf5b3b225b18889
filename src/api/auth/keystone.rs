//! `keystone` mode: the caller's `X-Auth-Token` is validated with Keystone v3 `GET /v3/auth/tokens`,
//! sending the token both as `X-Auth-Token` and as `X-Subject-Token`, so no service credentials are needed
//! (a token may always validate itself).
//!
//! Outcomes follow keystonemiddleware (and its self-validating variant): 200 with a project-scoped token →
//! the caller; any other 4xx, an expired token or a token without a project → 401 KPS.2002; a 5xx, a
//! connection failure, a timeout or an unparsable answer (after one retry) → 503 KPS.2005 "The Keystone
//! service is temporarily unavailable.". Valid and invalid results are cached by SHA-256 of the token (the
//! token itself is never kept) for `auth.keystone_cache_ttl_s`, never past the token's `expires_at`, in a
//! bounded map; "unavailable" is never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Caller;
use crate::api::error::ApiError;

/// Cached tokens at most; beyond that the entries closest to expiry make room.
const CACHE_CAPACITY: usize = 10_000;
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
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(str::is_empty) {
            return Err("must be an http:// or https:// URL".into());
        }
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            tokens_url: format!("{base}/v3/auth/tokens?nocatalog"),
            client,
            cache: TokenCache::new(cache_ttl, CACHE_CAPACITY),
        })
    }

    pub async fn validate(&self, token: &str) -> Result<Caller, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.cache.get(&key, Instant::now()) {
            return cached.ok_or_else(ApiError::invalid_credentials);
        }
        let (caller, lifetime) = match self.fetch(token).await? {
            Some((caller, lifetime)) => (Some(caller), lifetime),
            None => (None, None),
        };
        self.cache.insert(key, caller.clone(), lifetime, Instant::now());
        caller.ok_or_else(ApiError::invalid_credentials)
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

/// A validation result (`Some(caller)` valid, `None` invalid) and when it stops being used.
type CachedResult = (Option<Caller>, Instant);

/// Validation results by token hash.
struct TokenCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CachedResult>>,
}

impl TokenCache {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Option<Caller>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(key).filter(|(_, until)| now < *until).map(|(caller, _)| caller.clone())
    }

    fn insert(&self, key: [u8; 32], caller: Option<Caller>, lifetime: Option<Duration>, now: Instant) {
        let keep = lifetime.map_or(self.ttl, |left| left.min(self.ttl));
        if keep.is_zero() || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| *k)
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (caller, now + keep));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().expect("lock").len()
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn cache_entries_expire_with_the_ttl_or_the_token() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        cache.insert([1; 32], Some(caller("a")), None, now);
        cache.insert([2; 32], Some(caller("b")), Some(Duration::from_secs(5)), now);
        cache.insert([3; 32], None, None, now);
        assert_eq!(cache.get(&[1; 32], now + Duration::from_secs(59)), Some(Some(caller("a"))));
        assert_eq!(cache.get(&[1; 32], now + Duration::from_secs(60)), None);
        assert_eq!(cache.get(&[2; 32], now + Duration::from_secs(4)), Some(Some(caller("b"))));
        assert_eq!(cache.get(&[2; 32], now + Duration::from_secs(5)), None, "not past expires_at");
        assert_eq!(cache.get(&[3; 32], now), Some(None), "invalid tokens are remembered too");
        assert_eq!(cache.get(&[4; 32], now), None);
        let off = TokenCache::new(Duration::ZERO, 10);
        off.insert([1; 32], Some(caller("a")), None, now);
        assert_eq!(off.len(), 0, "TTL 0 disables the cache");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        for i in 0..10u8 {
            cache.insert([i; 32], Some(caller("a")), Some(Duration::from_secs(10 + u64::from(i))), now);
            assert!(cache.len() <= 3);
        }
        // The entries closest to expiry made room: the newest (longest-lived) ones stay.
        assert!(cache.get(&[9; 32], now).is_some());
        assert!(cache.get(&[0; 32], now).is_none());
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
