//! `static` mode: a tokens file maps SHA-256 hashes of tokens to callers (spec/interface.md).
//!
//! Only hashes are stored, so the file does not hand out credentials; it is still a secret file (it says who
//! is admin) and gets the same permission check as the other secret files. A presented token is hashed and
//! compared with every entry in constant time.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    sha256: String,
    user_id: String,
    project_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// The loaded tokens file. `Debug` shows the number of entries only.
pub struct StaticTokens {
    entries: Vec<([u8; 32], Caller)>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens").field("entries", &self.entries.len()).finish()
    }
}

impl StaticTokens {
    pub fn load(path: &Path, allow_group_readable: bool) -> Result<Self, AuthError> {
        let text = super::read_secret_file(path, allow_group_readable)?;
        Self::parse(&text).map_err(|message| AuthError::File { path: PathBuf::from(path), message })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if file.tokens.is_empty() {
            return Err("no [[tokens]] entries".into());
        }
        let mut entries: Vec<([u8; 32], Caller)> = Vec::with_capacity(file.tokens.len());
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{index}]");
            let hash = hex::decode(&entry.sha256)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| format!("{at}.sha256 is not 64 hex characters"))?;
            if entry.user_id.is_empty() || entry.project_id.is_empty() {
                return Err(format!("{at} needs a non-empty user_id and project_id"));
            }
            if entries.iter().any(|(known, _)| *known == hash) {
                return Err(format!("{at}.sha256 appears twice"));
            }
            let caller = Caller { user_id: entry.user_id, project_id: entry.project_id, roles: entry.roles };
            entries.push((hash, caller));
        }
        Ok(Self { entries })
    }

    /// The caller whose token hashes to an entry; every entry is compared, each in constant time.
    pub fn lookup(&self, token: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, caller) in &self.entries {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(caller);
            }
        }
        found.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn tokens_resolve_by_their_hash() {
        let text = format!(
            "[[tokens]]\nsha256 = \"{}\"\nuser_id = \"u-1\"\nproject_id = \"p-1\"\nroles = [\"member\"]\n\
             [[tokens]]\nsha256 = \"{}\"\nuser_id = \"root\"\nproject_id = \"p-0\"\nroles = [\"admin\"]\n",
            sha256_hex("secret-1"),
            sha256_hex("secret-admin").to_uppercase()
        );
        let tokens = StaticTokens::parse(&text).expect("parse");
        let member = tokens.lookup("secret-1").expect("known token");
        assert_eq!((member.user_id.as_str(), member.project_id.as_str()), ("u-1", "p-1"));
        assert!(!member.is_admin());
        assert!(tokens.lookup("secret-admin").expect("upper-case hex is fine").is_admin());
        assert_eq!(tokens.lookup("secret-2"), None);
        assert_eq!(tokens.lookup(&sha256_hex("secret-1")), None, "the hash itself is not a token");
        assert_eq!(format!("{tokens:?}"), "StaticTokens { entries: 2 }");
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_at_fault() {
        let hash = sha256_hex("t");
        let entry = |sha: &str, user: &str| {
            format!("[[tokens]]\nsha256 = \"{sha}\"\nuser_id = \"{user}\"\nproject_id = \"p\"\n")
        };
        for (text, expected) in [
            (String::new(), "no [[tokens]] entries".to_owned()),
            (entry("abc", "u"), "tokens[0].sha256 is not 64 hex characters".to_owned()),
            (entry(&"zz".repeat(32), "u"), "tokens[0].sha256 is not 64 hex characters".to_owned()),
            (entry(&hash, ""), "tokens[0] needs a non-empty user_id".to_owned()),
            (entry(&hash, "u") + &entry(&hash, "v"), "tokens[1].sha256 appears twice".to_owned()),
            (entry(&hash, "u") + "token = \"plain\"\n", "unknown field".to_owned()),
        ] {
            let error = StaticTokens::parse(&text).expect_err(&text);
            assert!(error.contains(&expected), "{text}: {error}");
        }
    }
}
