//! Authentication: turns request credentials into a `Caller`.
//!
//! Implemented: `noauth` (`X-Auth-Token: <user_id>:<project_id>[:<role>,...]`, development and tests).
//! `static`, `keystone` and `aksk` are refused at startup until they exist (README).

use axum::http::HeaderMap;

use super::error::ApiError;

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

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticator {
    NoAuth,
}

impl Authenticator {
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        match self {
            Self::NoAuth => {
                let token = headers.get("x-auth-token").ok_or_else(ApiError::authentication_required)?;
                let token = token.to_str().map_err(|_| ApiError::invalid_credentials())?;
                parse_noauth_token(token).ok_or_else(ApiError::invalid_credentials)
            }
        }
    }
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

    #[test]
    fn missing_token_is_2001_and_bad_token_is_2002() {
        let auth = Authenticator::NoAuth;
        assert_eq!(auth.authenticate(&HeaderMap::new()).expect_err("no token").code, "KPS.2001");
        let mut headers = HeaderMap::new();
        headers.insert("x-auth-token", "nonsense".parse().expect("header"));
        assert_eq!(auth.authenticate(&headers).expect_err("bad token").code, "KPS.2002");
    }
}
