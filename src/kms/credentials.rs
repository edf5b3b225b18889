//! The KMS credentials of `kms.*` — AK, SK and, for temporary credentials, the security token — and how
//! they follow their files.
//!
//! Temporary credentials expire, and whatever renews them (a sidecar, a cron job, an updated Kubernetes
//! secret) writes the files anew. So every KMS call first looks at the credential files in use
//! (`kms.ak_file`, `kms.sk_file`, `kms.security_token_file`: one `stat` each) and, when one's modification
//! time, size or inode changed, reads all of them again under the startup rules (mode check, trimming, a
//! value beats its file). A re-read that fails (a half-written or missing file, a wrong mode) keeps the
//! previous credentials and logs a warning; the next call tries again. Values given inline never change, and
//! without any credential file nothing is looked at.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use super::KmsConfigError;
use crate::config::KmsConfig;
use crate::signing::Credentials;

/// What identifies one version of a file: modification time, size, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

pub struct KmsCredentials {
    kms: KmsConfig,
    allow_group_readable: bool,
    /// The credential files in use; empty = the credentials never change.
    files: Vec<PathBuf>,
    state: Mutex<Loaded>,
}

struct Loaded {
    stamps: Vec<Stamp>,
    credentials: Arc<Credentials>,
}

impl std::fmt::Debug for KmsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsCredentials").field("files", &self.files).finish_non_exhaustive()
    }
}

impl KmsCredentials {
    /// Reads the credentials once (a missing or unusable one is a startup error).
    pub fn load(kms: &KmsConfig, allow_group_readable: bool) -> Result<Self, KmsConfigError> {
        let files: Vec<PathBuf> =
            [&kms.ak_file, &kms.sk_file, &kms.security_token_file].into_iter().flatten().cloned().collect();
        // Stamped before reading: a file replaced during the read is read again on the next call.
        let stamps = stamps(&files);
        let credentials = Arc::new(read(kms, allow_group_readable)?);
        Ok(Self { kms: kms.clone(), allow_group_readable, files, state: Mutex::new(Loaded { stamps, credentials }) })
    }

    /// Whether any credential comes from a file, so that [`KmsCredentials::current`] may change.
    pub fn follows_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// The credentials for the next call: re-read first when a credential file changed.
    pub fn current(&self) -> Arc<Credentials> {
        // The stat calls happen outside the lock; only a change takes it for the re-read.
        let stamps = stamps(&self.files);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if stamps != state.stamps {
            match read(&self.kms, self.allow_group_readable) {
                Ok(fresh) => {
                    state.credentials = Arc::new(fresh);
                    state.stamps = stamps;
                    tracing::info!("KMS credential files changed: the new credentials are in use");
                }
                Err(error) => {
                    tracing::warn!(%error, "KMS credential files changed but cannot be read; keeping the previous credentials");
                }
            }
        }
        Arc::clone(&state.credentials)
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|file| {
            std::fs::metadata(file).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()))
        })
        .collect()
}

fn read(kms: &KmsConfig, allow_group_readable: bool) -> Result<Credentials, KmsConfigError> {
    let ak = super::secret_value("kms.ak", kms.ak.as_deref(), kms.ak_file.as_deref(), allow_group_readable)?;
    let sk_value = kms.sk.as_ref().map(ExposeSecret::expose_secret);
    let sk = super::secret_value("kms.sk", sk_value, kms.sk_file.as_deref(), allow_group_readable)?;
    let credentials = Credentials::new(ak.as_str(), SecretString::from(sk.as_str()));
    Ok(match super::security_token(kms, allow_group_readable)? {
        Some(token) => credentials.with_security_token(SecretString::from(token.as_str())),
        None => credentials,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_secret(path: &std::path::Path, text: &str) {
        // As a renewer does it: a new file renamed over the old one.
        let temp = path.with_extension("new");
        std::fs::write(&temp, text).expect("write");
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(&temp, path).expect("rename");
    }

    #[test]
    fn changed_files_are_read_again_and_a_bad_change_keeps_the_old_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        write_secret(&token, "token-1\n");
        let kms = KmsConfig {
            ak: Some("AK".into()),
            sk: Some("SK".into()),
            security_token_file: Some(token.clone()),
            ..KmsConfig::default()
        };
        let source = KmsCredentials::load(&kms, false).expect("load");
        assert!(source.follows_files());
        let token_of = |c: &Credentials| c.security_token.as_ref().map(|t| t.expose_secret().to_owned());
        assert_eq!(token_of(&source.current()).as_deref(), Some("token-1"));

        write_secret(&token, "token-22\n");
        assert_eq!(token_of(&source.current()).as_deref(), Some("token-22"));

        write_secret(&token, "");
        assert_eq!(token_of(&source.current()).as_deref(), Some("token-22"), "an empty file is no token");
        write_secret(&token, "token-333");
        assert_eq!(token_of(&source.current()).as_deref(), Some("token-333"), "tried again on the next call");
        assert!(!format!("{source:?}").contains("token-333"));
    }

    #[test]
    fn inline_values_never_look_at_the_disk() {
        let kms = KmsConfig { ak: Some("AK".into()), sk: Some("SK".into()), ..KmsConfig::default() };
        let source = KmsCredentials::load(&kms, false).expect("load");
        assert!(!source.follows_files());
        assert_eq!(source.current().access_key, "AK");
    }
}
