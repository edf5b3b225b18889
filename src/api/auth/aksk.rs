//! `aksk` mode: Huawei Cloud SDK-HMAC-SHA256 signed requests (spec/interface.md "Authentication modes",
//! spec/kms-huawei.md §2.2).
//!
//! `auth.credentials_file` (TOML, a secret file: same permission rule as the tokens file) maps access keys to
//! their secret key and caller. The signature itself is checked by `crate::signing::verify`; this module only
//! turns its verdict into the catalogue errors (errors.md §3.11) and the access key into a `Caller`.
//! Secret keys are held as `SecretString` and never logged; `Debug` shows the number of entries only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use axum::http::request::Parts;
use secrecy::SecretString;
use serde::Deserialize;
use time::OffsetDateTime;

use super::{AuthError, Caller};
use crate::api::error::ApiError;
use crate::signing::{self, SignedRequest, VerifyError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: Vec<CredentialEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    ak: String,
    /// Moved into a `SecretString` right after parsing.
    sk: String,
    user_id: String,
    project_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// 401 KPS.2004: `X-Sdk-Date` missing, malformed or more than 15 minutes from server time.
pub fn signature_expired() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "KPS.2004", "Request signature expired or X-Sdk-Date missing")
}

/// The loaded credentials file.
pub struct AkskCredentials {
    by_access_key: HashMap<String, (SecretString, Caller)>,
}

impl std::fmt::Debug for AkskCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkskCredentials").field("entries", &self.by_access_key.len()).finish()
    }
}

impl AkskCredentials {
    pub fn load(path: &Path, allow_group_readable: bool) -> Result<Self, AuthError> {
        let text = super::read_secret_file(path, allow_group_readable)?;
        Self::parse(&text).map_err(|message| AuthError::File { path: PathBuf::from(path), message })
    }

    fn parse(text: &str) -> Result<Self, String> {
        // toml's messages quote the offending line only for syntax errors, never a parsed `sk` value.
        let file: CredentialsFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if file.credentials.is_empty() {
            return Err("no [[credentials]] entries".into());
        }
        let mut by_access_key = HashMap::with_capacity(file.credentials.len());
        for (index, entry) in file.credentials.into_iter().enumerate() {
            let at = format!("credentials[{index}]");
            if entry.ak.is_empty() || entry.ak.contains([',', ' ', '=']) {
                return Err(format!("{at}.ak must be non-empty without spaces, commas or '='"));
            }
            if entry.sk.is_empty() {
                return Err(format!("{at}.sk must not be empty"));
            }
            if entry.user_id.is_empty() || entry.project_id.is_empty() {
                return Err(format!("{at} needs a non-empty user_id and project_id"));
            }
            let caller = Caller { user_id: entry.user_id, project_id: entry.project_id, roles: entry.roles };
            let sk = SecretString::from(entry.sk);
            if by_access_key.insert(entry.ak.clone(), (sk, caller)).is_some() {
                return Err(format!("{at}.ak {} appears twice", entry.ak));
            }
        }
        Ok(Self { by_access_key })
    }

    /// Verifies the request's signature at `now`: no `Authorization` → KPS.2001 (an `X-Auth-Token` does not
    /// count), a bad `X-Sdk-Date` → KPS.2004, anything else wrong → KPS.2002. `X-Project-Id`, if sent, must
    /// be the credential's project.
    pub fn authenticate(&self, parts: &Parts, body: &[u8], now: OffsetDateTime) -> Result<Caller, ApiError> {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let request = SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body,
        };
        let verified =
            signing::verify(&request, now, |ak| self.by_access_key.get(ak).map(|(sk, _)| sk)).map_err(|error| {
                match error {
                    VerifyError::Missing => ApiError::authentication_required(),
                    VerifyError::Date => signature_expired(),
                    VerifyError::Malformed
                    | VerifyError::UnknownAccessKey
                    | VerifyError::SignedHeaderAbsent
                    | VerifyError::PayloadHashMismatch
                    | VerifyError::Mismatch => ApiError::invalid_credentials(),
                }
            })?;
        let (_, caller) = self.by_access_key.get(&verified.access_key).ok_or_else(ApiError::invalid_credentials)?;
        if let Some(project) = parts.headers.get("x-project-id")
            && project.as_bytes() != caller.project_id.as_bytes()
        {
            return Err(ApiError::invalid_credentials());
        }
        Ok(caller.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use secrecy::ExposeSecret;
    use signing::Credentials;

    const AK: &str = "HPUAEXAMPLEAK0000001";
    const SK: &str = "ExampleSecretKey0000000000000000000000001";
    const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn credentials() -> AkskCredentials {
        AkskCredentials::parse(&format!(
            "[[credentials]]\nak = \"{AK}\"\nsk = \"{SK}\"\nuser_id = \"u-1001\"\nproject_id = \"{PROJECT}\"\n\
             roles = [\"member\"]\n\
             [[credentials]]\nak = \"ADMINAK\"\nsk = \"admin-sk\"\nuser_id = \"root\"\nproject_id = \"p-0\"\n\
             roles = [\"admin\"]\n"
        ))
        .expect("parse")
    }

    /// A request signed by the client side of `signing` (headers in `extra` are added after signing).
    fn signed(
        method: &str,
        uri: &str,
        body: &[u8],
        sign_headers: &[(&str, &str)],
        sk: &str,
        at: OffsetDateTime,
    ) -> Parts {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut headers: Vec<(String, String)> = vec![("Host".into(), "kps.test:8774".into())];
        headers.extend(sign_headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
        let request = SignedRequest { method, path, query, headers: &headers, body };
        let signature = signing::sign(&request, &Credentials::new(AK, SecretString::from(sk)), at);
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        builder = builder.header("X-Sdk-Date", signature.sdk_date).header("Authorization", signature.authorization);
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn a_signed_request_authenticates_as_the_credential_caller() {
        let aksk = credentials();
        let now = OffsetDateTime::now_utc();
        let body = br#"{"keypair":{"name":"k"}}"#;
        let headers = [("Content-Type", "application/json;charset=UTF-8"), ("X-Project-Id", PROJECT)];
        let parts = signed("POST", &format!("/v3/{PROJECT}/keypairs?a=1"), body, &headers, SK, now);
        let caller = aksk.authenticate(&parts, body, now).expect("valid");
        assert_eq!(
            caller,
            Caller { user_id: "u-1001".into(), project_id: PROJECT.into(), roles: vec!["member".into()] }
        );
        // Same request, other body: the payload hash no longer matches.
        assert_eq!(aksk.authenticate(&parts, b"{}", now).expect_err("tampered").code, "KPS.2002");
        // 16 minutes later the signature has expired.
        let late = now + time::Duration::minutes(16);
        assert_eq!(aksk.authenticate(&parts, body, late).expect_err("late").code, "KPS.2004");
    }

    #[test]
    fn errors_map_to_2001_2002_and_2004() {
        let aksk = credentials();
        let now = OffsetDateTime::now_utc();
        let bare = |headers: &[(&str, &str)]| {
            let mut builder = Request::builder().uri("/v3/p/keypairs").header("host", "kps.test");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).expect("request").into_parts().0
        };
        let code = |parts: &Parts| aksk.authenticate(parts, b"", now).expect_err("refused").code;
        assert_eq!(code(&bare(&[])), "KPS.2001");
        assert_eq!(code(&bare(&[("x-auth-token", "u:p")])), "KPS.2001", "tokens do not count in aksk mode");
        assert_eq!(code(&bare(&[("authorization", "Bearer x")])), "KPS.2002");
        let no_date = "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, SignedHeaders=host;x-sdk-date, Signature=00";
        assert_eq!(code(&bare(&[("authorization", no_date)])), "KPS.2004");

        let unknown = signed("GET", "/v3/p/keypairs", b"", &[], "wrong-sk", now);
        assert_eq!(code(&unknown), "KPS.2002");
        // The right SK but another AK in the header.
        let mut other_ak = signed("GET", "/v3/p/keypairs", b"", &[], SK, now);
        let authorization = other_ak.headers["authorization"].to_str().expect("ascii").replace(AK, "NOSUCHAK");
        other_ak.headers.insert("authorization", authorization.parse().expect("header"));
        assert_eq!(code(&other_ak), "KPS.2002");
    }

    #[test]
    fn x_project_id_must_be_the_credential_project() {
        let aksk = credentials();
        let now = OffsetDateTime::now_utc();
        let parts = signed("GET", "/v3/p-other/keypairs", b"", &[("X-Project-Id", "p-other")], SK, now);
        assert_eq!(aksk.authenticate(&parts, b"", now).expect_err("wrong project").code, "KPS.2002");
    }

    #[test]
    fn bad_files_are_refused_without_showing_secrets() {
        let entry = |ak: &str, sk: &str, user: &str| {
            format!("[[credentials]]\nak = \"{ak}\"\nsk = \"{sk}\"\nuser_id = \"{user}\"\nproject_id = \"p\"\n")
        };
        for (text, expected) in [
            (String::new(), "no [[credentials]] entries".to_owned()),
            (entry("", "s", "u"), "credentials[0].ak must be non-empty".to_owned()),
            (entry("a b", "s", "u"), "credentials[0].ak must be non-empty".to_owned()),
            (entry("a", "", "u"), "credentials[0].sk must not be empty".to_owned()),
            (entry("a", "s", ""), "credentials[0] needs a non-empty user_id".to_owned()),
            (entry("a", "s1", "u") + &entry("a", "s2", "v"), "credentials[1].ak a appears twice".to_owned()),
            (entry("a", "s", "u") + "secret = \"x\"\n", "unknown field".to_owned()),
        ] {
            let error = AkskCredentials::parse(&text).expect_err(&text);
            assert!(error.contains(&expected), "{text}: {error}");
            assert!(!error.contains("s1") && !error.contains("s2"), "{error}");
        }
        let loaded = credentials();
        assert_eq!(format!("{loaded:?}"), "AkskCredentials { entries: 2 }");
        assert_eq!(loaded.by_access_key[AK].0.expose_secret(), SK);
    }
}
