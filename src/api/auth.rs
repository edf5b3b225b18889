//! Authentication: turns request credentials into a `Caller` (spec/interface.md, "Authentication modes").
//!
//! Implemented: `noauth` (`X-Auth-Token: <user_id>:<project_id>[:<role>,...]`, development and tests),
//! `static` (a tokens file of SHA-256 hashes, `static_tokens`) and `keystone` (Keystone v3 token validation,
//! `keystone`) and `aksk` (Huawei SDK-HMAC-SHA256 signatures checked against a credentials file, `aksk`).
//!
//! Every mode answers a missing credential with 401 KPS.2001 and a bad one with 401 KPS.2002 (`aksk` adds
//! KPS.2004 for a missing or stale `X-Sdk-Date`); in `keystone` mode 401s carry
//! `WWW-Authenticate: Keystone uri="<auth.keystone_url>"` (errors.md §1).

mod aksk;
mod keystone;
mod static_tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zeroize::Zeroizing;

use self::aksk::AkskCredentials;
use self::keystone::Keystone;
use self::static_tokens::StaticTokens;
use super::error::ApiError;
use crate::config::secret_file::{self, SecretFileError};
use crate::config::{AuthConfig, AuthMode};
use crate::tls::CaBundle;

/// The authenticated identity a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|role| role == "admin")
    }
}

/// Why the configured authentication cannot be set up; refused at startup.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.mode = {mode} needs {setting}")]
    Missing { mode: &'static str, setting: &'static str },
    #[error(
        "auth file {path} has mode {mode:04o}: it must not be group- or world-readable (chmod 600 {path}, or set \
         secrets.allow_group_readable for a group-readable secret mount)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("auth file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid auth.keystone_url {url:?}: {message}")]
    KeystoneUrl { url: String, message: String },
}

/// How callers are authenticated.
#[derive(Debug)]
pub enum Authenticator {
    NoAuth,
    Static(StaticTokens),
    Keystone {
        keystone: Box<Keystone>,
        /// `Keystone uri="<auth.keystone_url>"`, sent on every 401.
        challenge: HeaderValue,
    },
    Aksk(AkskCredentials),
}

impl Authenticator {
    /// The authenticator of `auth.mode`, with its tokens file loaded (and permission-checked) or its
    /// Keystone client built.
    pub fn from_config(auth: &AuthConfig, allow_group_readable: bool) -> Result<Self, AuthError> {
        Self::from_config_trusting(auth, allow_group_readable, None)
    }

    /// [`Authenticator::from_config`] whose Keystone client trusts exactly `roots` (`tls.ca_file`) when given.
    pub fn from_config_trusting(
        auth: &AuthConfig,
        allow_group_readable: bool,
        roots: Option<&CaBundle>,
    ) -> Result<Self, AuthError> {
        match auth.mode {
            AuthMode::Noauth => Ok(Self::NoAuth),
            AuthMode::Static => {
                let path = auth
                    .tokens_file
                    .as_deref()
                    .ok_or(AuthError::Missing { mode: "static", setting: "auth.tokens_file (KPS_AUTH_TOKENS_FILE)" })?;
                Ok(Self::Static(StaticTokens::load(path, allow_group_readable)?))
            }
            AuthMode::Keystone => {
                let url = auth.keystone_url.as_deref().ok_or(AuthError::Missing {
                    mode: "keystone",
                    setting: "auth.keystone_url (KPS_AUTH_KEYSTONE_URL)",
                })?;
                let invalid = |message: String| AuthError::KeystoneUrl { url: url.into(), message };
                let ttl = Duration::from_secs(auth.keystone_cache_ttl_s);
                let keystone = Keystone::new_trusting(url, ttl, roots).map_err(invalid)?;
                let challenge = HeaderValue::from_str(&format!("Keystone uri=\"{url}\""))
                    .map_err(|_| invalid("not usable in a WWW-Authenticate header".into()))?;
                Ok(Self::Keystone { keystone: Box::new(keystone), challenge })
            }
            AuthMode::Aksk => {
                let path = auth.credentials_file.as_deref().ok_or(AuthError::Missing {
                    mode: "aksk",
                    setting: "auth.credentials_file (KPS_AUTH_CREDENTIALS_FILE)",
                })?;
                Ok(Self::Aksk(AkskCredentials::load(path, allow_group_readable)?))
            }
        }
    }

    /// The caller of a request. `body` is the whole (already read) body: `aksk` signatures cover it, along
    /// with the method, path and query of `parts`; the token modes only read `X-Auth-Token`.
    pub async fn authenticate(&self, parts: &Parts, body: &[u8]) -> Result<Caller, ApiError> {
        if let Self::Aksk(credentials) = self {
            return credentials.authenticate(parts, body, time::OffsetDateTime::now_utc());
        }
        self.authenticate_token(&parts.headers).await
    }

    async fn authenticate_token(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = headers.get("x-auth-token").ok_or_else(ApiError::authentication_required)?;
        let token = token.to_str().ok().filter(|t| !t.is_empty()).ok_or_else(ApiError::invalid_credentials)?;
        match self {
            Self::NoAuth => parse_noauth_token(token).ok_or_else(ApiError::invalid_credentials),
            Self::Static(tokens) => tokens.lookup(token).ok_or_else(ApiError::invalid_credentials),
            Self::Keystone { keystone, .. } => keystone.validate(token).await,
            // Unreachable through `authenticate`; a token is never an aksk credential.
            Self::Aksk(_) => Err(ApiError::authentication_required()),
        }
    }

    /// The Keystone token cache's hits and misses (`GET /metrics`); `None` in the other modes.
    pub fn token_cache_counts(&self) -> Option<&crate::metrics::CacheCounts> {
        match self {
            Self::Keystone { keystone, .. } => Some(keystone.cache_counts()),
            _ => None,
        }
    }

    /// The response for a failed authentication: the error, plus the mode's challenge on a 401.
    pub fn reject(&self, error: ApiError) -> Response {
        let unauthorized = error.status == StatusCode::UNAUTHORIZED;
        let mut response = error.into_response();
        if let (true, Self::Keystone { challenge, .. }) = (unauthorized, self) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        response
    }
}

/// The text of an auth secret file (`config::secret_file`: refused when world-accessible, or group-accessible
/// unless `secrets.allow_group_readable`, as for the master key file).
fn read_secret_file(path: &Path, allow_group_readable: bool) -> Result<Zeroizing<String>, AuthError> {
    secret_file::read_to_string(path, allow_group_readable).map_err(|error| match error {
        SecretFileError::Permissions { path, mode } => AuthError::Permissions { path, mode },
        SecretFileError::Io { path, source } => AuthError::File { path, message: source.to_string() },
    })
}

/// `user:project` or `user:project:role[,role...]`: exactly 2 or 3 non-empty fields.
fn parse_noauth_token(token: &str) -> Option<Caller> {
    let fields: Vec<&str> = token.split(':').collect();
    if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.is_empty()) {
        return None;
    }
    let roles = fields.get(2).map(|r| r.split(',').map(str::to_owned).collect()).unwrap_or_default();
    Some(Caller { user_id: fields[0].to_owned(), project_id: fields[1].to_owned(), roles })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn noauth_tokens_follow_the_interface_rules() {
        let caller = parse_noauth_token("u-1:p-1").expect("two fields");
        assert_eq!((caller.user_id.as_str(), caller.project_id.as_str()), ("u-1", "p-1"));
        assert!(!caller.is_admin());
        let admin = parse_noauth_token("u-1:p-1:member,admin").expect("three fields");
        assert!(admin.is_admin());
        for bad in ["", "u", "u:", ":p", "u:p:", "u:p:r:x", "u::r"] {
            assert_eq!(parse_noauth_token(bad), None, "{bad:?}");
        }
    }

    fn token(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-auth-token", HeaderValue::from_bytes(value).expect("header"));
        headers
    }

    #[tokio::test]
    async fn missing_token_is_2001_and_bad_token_is_2002() {
        let auth = Authenticator::NoAuth;
        assert_eq!(auth.authenticate_token(&HeaderMap::new()).await.expect_err("no token").code, "KPS.2001");
        for bad in [&b"nonsense"[..], b"", b"u:p:\xff"] {
            assert_eq!(auth.authenticate_token(&token(bad)).await.expect_err("bad token").code, "KPS.2002");
        }
    }

    #[test]
    fn modes_need_their_settings() {
        let config = |mode| AuthConfig { mode, ..AuthConfig::default() };
        for (mode, expected) in [
            (AuthMode::Static, "auth.mode = static needs auth.tokens_file"),
            (AuthMode::Keystone, "auth.mode = keystone needs auth.keystone_url"),
            (AuthMode::Aksk, "auth.mode = aksk needs auth.credentials_file"),
        ] {
            let error = Authenticator::from_config(&config(mode), false).expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
        let bad_url = AuthConfig { keystone_url: Some("ks:5000".into()), ..config(AuthMode::Keystone) };
        let error = Authenticator::from_config(&bad_url, false).expect_err("bad url").to_string();
        assert!(error.contains("invalid auth.keystone_url \"ks:5000\""), "{error}");
    }

    #[test]
    fn secret_files_must_not_be_group_or_world_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "").expect("write");
        for (mode, allow_group, ok) in [
            (0o600, false, true),
            (0o400, false, true),
            (0o640, false, false),
            (0o640, true, true),
            (0o440, true, true),
            (0o660, true, false),
            (0o604, true, false),
            (0o644, true, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let result = read_secret_file(&path, allow_group);
            assert_eq!(result.is_ok(), ok, "{mode:o} allow_group={allow_group}: {result:?}");
            if let Err(error) = result {
                assert!(error.to_string().contains(&format!("has mode {mode:04o}")), "{error}");
            }
        }
    }

    #[test]
    fn keystone_401s_carry_the_challenge_and_other_errors_do_not() {
        let config = AuthConfig {
            mode: AuthMode::Keystone,
            keystone_url: Some("http://keystone.test:5000".into()),
            ..AuthConfig::default()
        };
        let keystone = Authenticator::from_config(&config, false).expect("keystone");
        let response = keystone.reject(ApiError::invalid_credentials());
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).expect("challenge");
        assert_eq!(challenge, "Keystone uri=\"http://keystone.test:5000\"");
        let unavailable = keystone.reject(keystone::keystone_unavailable());
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(unavailable.headers().get(header::WWW_AUTHENTICATE).is_none());
        let noauth = Authenticator::NoAuth.reject(ApiError::authentication_required());
        assert!(noauth.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
