//! KMS adapters: data keys (DEKs) for `encryption.type = kms` come from, and are unwrapped by, an external
//! KMS (spec/kms-huawei.md).
//!
//! [`KmsClient`] is an enum over the providers (Huawei KMS v1.0 in `huawei`, AWS KMS in `aws`). Its contract,
//! the same for every provider:
//! * [`KmsClient::resolve`] turns a key reference (alias or id) into the key id to store, checking the key's
//!   state and spec **without** any data-key call; found keys are cached 60 s, unknown ones 10 s, and
//!   concurrent lookups share one KMS call (`cache`);
//! * [`KmsClient::generate_data_key`] makes exactly one data-key call;
//! * the data-key calls get the record identity as an [`EncryptionContext`] that custody builds; AWS binds it
//!   (§7), Huawei's API has no such field (custody's local AAD binds the record there). This module never
//!   sees custody's types: the dependency runs one way, custody → kms;
//! * every failure is a [`KmsError`], one variant per catalogue code (KPS.1801–1806, KPS.1401), whose text
//!   names only the operation, the attempt count and the upstream error code — never upstream text, URLs or
//!   secrets.
//!
//! The `kms-mock` crate of this workspace stands in for Huawei KMS in development and tests; none of it is
//! in this library.

pub mod aws;
mod cache;
pub mod credentials;
pub mod huawei;
pub mod stats;
pub mod transport;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::config::KmsConfig;
use crate::config::secret_file::{self, SecretFileError};
use crate::tls::CaBundle;

pub use aws::AwsKms;
pub use credentials::KmsCredentials;
pub use huawei::HuaweiKms;
pub use transport::Transport;

/// Length of the data keys kps uses (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// Name/value pairs a data key is bound to, built by custody from the record identity (the same identity as
/// its AAD). AWS sends them as the EncryptionContext of every data-key call (spec/kms-huawei.md §7), so AWS
/// itself refuses to unwrap a data key for another record; Huawei's API has no such field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(Vec<(String, String)>);

impl EncryptionContext {
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// What a caller names a KMS key by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// `encryption.kms_key_name`: a key alias, resolved by listing keys.
    Alias(String),
    /// `encryption.kms_key_id`: a key id (UUID), resolved by describing the key.
    Id(String),
}

impl KeyRef {
    /// Reads a reference of unknown kind (`kms.check_key`, `kps rewrap --to-kms-key`): a string in the key id
    /// form (`^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$`) is an id, anything else an alias.
    pub fn parse(text: &str) -> Self {
        if is_key_id(text) { Self::Id(text.to_owned()) } else { Self::Alias(text.to_owned()) }
    }

    /// The reference as the caller gave it (used in error messages).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Alias(text) | Self::Id(text) => text,
        }
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$` (the API's `kms_key_id` pattern).
pub fn is_key_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| {
            group.len() == len && group.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
}

/// A key reference that resolved to a usable key: enabled and of a supported spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    /// The id to store with the escrow and pass to the data-key calls.
    pub key_id: String,
    /// The key's alias when the KMS reported one (`kms_key_name` in responses).
    pub alias: Option<String>,
    /// Provider state as reported (Huawei `key_state`, e.g. `"2"`).
    pub state: String,
    /// Provider spec as reported (e.g. `AES_256`).
    pub spec: String,
}

/// What a provider calls a usable key: its enabled and disabled states and the one key spec kps accepts.
pub(crate) struct UsableKey {
    pub enabled: &'static str,
    pub disabled: &'static str,
    pub spec: &'static str,
}

impl ResolvedKey {
    /// The state and spec checks before any data-key call (kms-huawei.md §3 steps 4-5, §7): a disabled key,
    /// a key in any other state than enabled, or one of another spec is refused; `key` names it in the error.
    pub(crate) fn check_usable(&self, key: &str, usable: &UsableKey) -> Result<(), KmsError> {
        match self.state.as_str() {
            state if state == usable.enabled => {}
            state if state == usable.disabled => return Err(KmsError::KeyDisabled { key: key.to_owned() }),
            other => return Err(KmsError::KeyUnusable { key: key.to_owned(), state: other.to_owned() }),
        }
        if self.spec != usable.spec {
            return Err(KmsError::UnsupportedKeySpec { key: key.to_owned(), spec: self.spec.clone() });
        }
        Ok(())
    }
}

/// A fresh data key: the plaintext for local encryption (zeroized on drop, never printed) and the KMS-wrapped
/// form to store.
pub struct DataKey {
    pub key_id: String,
    plaintext: Zeroizing<[u8; DATA_KEY_LEN]>,
    cipher_text: String,
}

impl DataKey {
    pub fn new(key_id: String, plaintext: Zeroizing<[u8; DATA_KEY_LEN]>, cipher_text: String) -> Self {
        Self { key_id, plaintext, cipher_text }
    }

    /// The DEK. Use it, do not copy it out of a `Zeroizing`.
    pub fn plaintext(&self) -> &[u8; DATA_KEY_LEN] {
        &self.plaintext
    }

    /// The wrapped DEK (opaque provider text; hex for Huawei) to store with the record.
    pub fn cipher_text(&self) -> &str {
        &self.cipher_text
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext", &"[REDACTED]")
            .field("cipher_text", &self.cipher_text)
            .finish()
    }
}

/// KMS failures, one variant per KPS catalogue code (spec/errors.md §3.9 and KPS.1401).
///
/// `Display` renders the catalogue message template; `Undecryptable` needs the key pair name the KMS layer
/// does not know, so the edge renders it with [`KmsError::message_for_keypair`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// KPS.1801 (503): unreachable, timeout, 5xx, throttling after retries, or any unexpected answer.
    #[error("KMS is unavailable: {detail}")]
    Unavailable { detail: String },
    /// KPS.1802 (400): alias not found, KMS.0205/0207.
    #[error("KMS key {key} not found")]
    KeyNotFound { key: String },
    /// KPS.1803 (400): key state `"3"` or KMS.0209.
    #[error("KMS key {key} is disabled")]
    KeyDisabled { key: String },
    /// KPS.1804 (400): pending deletion or otherwise unusable (any state but `"2"`/`"3"`), or KMS.0210.
    #[error("KMS key {key} is pending deletion or not usable (state {state})")]
    KeyUnusable { key: String, state: String },
    /// KPS.1805 (500): the KMS rejected our credentials or permission.
    #[error("KMS rejected the service credentials: {detail}")]
    CredentialsRejected { detail: String },
    /// KPS.1806 (500): the stored data key could not be unwrapped or failed its integrity check. `detail` is
    /// for logs only; the API message is [`KmsError::message_for_keypair`].
    #[error("data key could not be decrypted: {detail}")]
    Undecryptable { detail: String },
    /// KPS.1401 (400): the key is not an `AES_256` key.
    #[error("Invalid key_protection: unsupported KMS key spec")]
    UnsupportedKeySpec { key: String, spec: String },
}

impl KmsError {
    /// The catalogue code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "KPS.1801",
            Self::KeyNotFound { .. } => "KPS.1802",
            Self::KeyDisabled { .. } => "KPS.1803",
            Self::KeyUnusable { .. } => "KPS.1804",
            Self::CredentialsRejected { .. } => "KPS.1805",
            Self::Undecryptable { .. } => "KPS.1806",
            Self::UnsupportedKeySpec { .. } => "KPS.1401",
        }
    }

    /// The catalogue HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unavailable { .. } => 503,
            Self::KeyNotFound { .. }
            | Self::KeyDisabled { .. }
            | Self::KeyUnusable { .. }
            | Self::UnsupportedKeySpec { .. } => 400,
            Self::CredentialsRejected { .. } | Self::Undecryptable { .. } => 500,
        }
    }

    /// The catalogue message, with the key pair name for KPS.1806 (the other templates do not use it).
    pub fn message_for_keypair(&self, keypair_name: &str) -> String {
        match self {
            Self::Undecryptable { .. } => {
                format!("Escrowed private key of keypair {keypair_name} could not be decrypted")
            }
            other => other.to_string(),
        }
    }
}

/// A KMS client over the configured provider.
pub enum KmsClient {
    Huawei(HuaweiKms),
    Aws(AwsKms),
}

impl KmsClient {
    /// Resolves `key` to a usable key (§3): cached alias/id → (id, state, spec) for 60 s (a miss for 10 s),
    /// otherwise one paged list-keys (alias, at most 10 pages) or one describe-key (id), shared by concurrent
    /// lookups; then the state and spec checks, without a data-key call.
    pub async fn resolve(&self, key: &KeyRef) -> Result<ResolvedKey, KmsError> {
        match self {
            Self::Huawei(huawei) => huawei.resolve(key).await,
            Self::Aws(aws) => aws.resolve(key).await,
        }
    }

    /// Exactly one create-datakey call for a 256-bit DEK under `key_id` (a resolved id).
    pub async fn generate_data_key(&self, key_id: &str, context: &EncryptionContext) -> Result<DataKey, KmsError> {
        match self {
            Self::Huawei(huawei) => huawei.generate_data_key(key_id).await,
            Self::Aws(aws) => aws.generate_data_key(key_id, context).await,
        }
    }

    /// Unwraps a stored data key (decrypt-datakey), checking its length and digest.
    pub async fn decrypt_data_key(
        &self,
        key_id: &str,
        cipher_text: &str,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, KmsError> {
        match self {
            Self::Huawei(huawei) => huawei.decrypt_data_key(key_id, cipher_text).await,
            Self::Aws(aws) => aws.decrypt_data_key(key_id, cipher_text, context).await,
        }
    }

    /// Wraps an existing DEK under `key_id` (encrypt-datakey; `kps rewrap` onto a KMS key). Returns the
    /// wrapped form to store.
    pub async fn encrypt_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; DATA_KEY_LEN],
        context: &EncryptionContext,
    ) -> Result<String, KmsError> {
        match self {
            Self::Huawei(huawei) => huawei.encrypt_data_key(key_id, plaintext).await,
            Self::Aws(aws) => aws.encrypt_data_key(key_id, plaintext, context).await,
        }
    }

    /// Forgets every cached resolution (`kps rewrap` starts with this).
    pub fn clear_cache(&self) {
        match self {
            Self::Huawei(huawei) => huawei.clear_cache(),
            Self::Aws(aws) => aws.clear_cache(),
        }
    }

    /// Calls, failures and call durations by operation (`GET /metrics`).
    pub fn call_stats(&self) -> &stats::KmsCallStats {
        match self {
            Self::Huawei(huawei) => huawei.call_stats(),
            Self::Aws(aws) => aws.call_stats(),
        }
    }

    /// Key resolutions answered by the resolution cache and made anew (`GET /metrics`).
    pub fn key_cache_counts(&self) -> &crate::metrics::CacheCounts {
        match self {
            Self::Huawei(huawei) => huawei.cache_counts(),
            Self::Aws(aws) => aws.cache_counts(),
        }
    }

    /// The provider name as configured (`huawei`, `aws`).
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Huawei(_) => "huawei",
            Self::Aws(_) => "aws",
        }
    }
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KmsClient").field(&self.provider()).finish()
    }
}

/// Why the `kms.*` configuration cannot be used (kps refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum KmsConfigError {
    #[error("kms.provider {0:?} is not supported (expected huawei or aws)")]
    UnknownProvider(String),
    #[error("{0} must be set when kms.provider is set")]
    Missing(&'static str),
    #[error("invalid {name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot read {name} file {path}: {source}")]
    SecretFile { name: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "{name} file {path} has mode {mode:04o}; it must be 0600 (or 0440/0640 with \
         secrets.allow_group_readable), never world-readable"
    )]
    SecretFilePermissions { name: &'static str, path: PathBuf, mode: u32 },
    #[error("cannot build the KMS HTTP client: {0}")]
    Http(String),
}

/// Builds the configured KMS client, or `None` without `kms.provider`. Never contacts the KMS (startup does
/// not depend on it). `roots` is `tls.ca_file` loaded (`crate::tls::CaBundle`): with it the client trusts
/// exactly those CAs, without it the system's roots.
pub fn from_config(
    kms: &KmsConfig,
    allow_group_readable: bool,
    roots: Option<&CaBundle>,
) -> Result<Option<KmsClient>, KmsConfigError> {
    let Some(provider) = kms.provider.as_deref() else {
        return Ok(None);
    };
    if !matches!(provider, "huawei" | "aws") {
        return Err(KmsConfigError::UnknownProvider(provider.to_owned()));
    }
    // Read once here (a missing or bad credential refuses to start), then followed: see `credentials`.
    let source = Arc::new(KmsCredentials::load(kms, allow_group_readable)?);
    let credentials = source.current();
    let follows_files = source.follows_files().then_some(source);
    match provider {
        "huawei" => {
            let settings = huawei::HuaweiSettings {
                endpoint: kms.endpoint.clone(),
                region: kms.region.clone(),
                project_id: kms.project_id.clone().ok_or(KmsConfigError::Missing("kms.project_id"))?,
                credentials: (*credentials).clone(),
                transport: Transport::default(),
            };
            let huawei = HuaweiKms::new_trusting(settings, roots)?;
            Ok(Some(KmsClient::Huawei(match follows_files {
                Some(source) => huawei.following(source),
                None => huawei,
            })))
        }
        "aws" => {
            let settings = aws::AwsSettings {
                endpoint: kms.endpoint.clone(),
                region: kms.region.clone().ok_or(KmsConfigError::Missing("kms.region"))?,
                access_key_id: Zeroizing::new(credentials.access_key.clone()),
                secret_access_key: Zeroizing::new(credentials.secret_key.expose_secret().to_owned()),
                session_token: credentials
                    .security_token
                    .as_ref()
                    .map(|t| Zeroizing::new(t.expose_secret().to_owned())),
                transport: Transport::default(),
            };
            let aws = AwsKms::new_trusting(settings, roots)?;
            Ok(Some(KmsClient::Aws(match follows_files {
                Some(source) => aws.following(source),
                None => aws,
            })))
        }
        other => Err(KmsConfigError::UnknownProvider(other.to_owned())),
    }
}

/// `kms.security_token` or its file, if either is set (temporary credentials; both providers).
fn security_token(kms: &KmsConfig, allow_group_readable: bool) -> Result<Option<Zeroizing<String>>, KmsConfigError> {
    let value = kms.security_token.as_ref().map(ExposeSecret::expose_secret);
    let file = kms.security_token_file.as_deref();
    if value.is_none() && file.is_none() {
        return Ok(None);
    }
    let token = secret_value("kms.security_token", value, file, allow_group_readable)?;
    // It travels as a header value (X-Security-Token, x-amz-security-token).
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KmsConfigError::Invalid { name: "kms.security_token", message: "expected printable ASCII".into() });
    }
    Ok(Some(token))
}

/// A credential from its value, else from its file (`config::secret_file`: a value beats a file, the file is
/// mode-checked). Surrounding whitespace (the trailing newline of a file) is not part of the secret.
fn secret_value(
    name: &'static str,
    value: Option<&str>,
    file: Option<&Path>,
    allow_group_readable: bool,
) -> Result<Zeroizing<String>, KmsConfigError> {
    let text = secret_file::value_or_file(value, file, allow_group_readable)
        .map_err(|error| match error {
            SecretFileError::Io { path, source } => KmsConfigError::SecretFile { name, path, source },
            SecretFileError::Permissions { path, mode } => KmsConfigError::SecretFilePermissions { name, path, mode },
        })?
        .ok_or(KmsConfigError::Missing(name))?;
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(KmsConfigError::Invalid { name, message: "empty".into() });
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn errors_map_one_to_one_to_the_catalogue() {
        let key = || "kps-escrow".to_owned();
        let table: [(KmsError, &str, u16, &str); 7] = [
            (
                KmsError::Unavailable { detail: "timeout after 3 attempts calling create-datakey".into() },
                "KPS.1801",
                503,
                "KMS is unavailable: timeout after 3 attempts calling create-datakey",
            ),
            (KmsError::KeyNotFound { key: key() }, "KPS.1802", 400, "KMS key kps-escrow not found"),
            (KmsError::KeyDisabled { key: key() }, "KPS.1803", 400, "KMS key kps-escrow is disabled"),
            (
                KmsError::KeyUnusable { key: key(), state: "4".into() },
                "KPS.1804",
                400,
                "KMS key kps-escrow is pending deletion or not usable (state 4)",
            ),
            (
                KmsError::CredentialsRejected { detail: "list-keys answered KMS.0302".into() },
                "KPS.1805",
                500,
                "KMS rejected the service credentials: list-keys answered KMS.0302",
            ),
            (
                KmsError::Undecryptable { detail: "decrypt-datakey answered KMS.0308".into() },
                "KPS.1806",
                500,
                "Escrowed private key of keypair db-admin could not be decrypted",
            ),
            (
                KmsError::UnsupportedKeySpec { key: key(), spec: "SM4".into() },
                "KPS.1401",
                400,
                "Invalid key_protection: unsupported KMS key spec",
            ),
        ];
        for (error, code, status, message) in table {
            assert_eq!(error.code(), code);
            assert_eq!(error.http_status(), status, "{code}");
            assert_eq!(error.message_for_keypair("db-admin"), message, "{code}");
        }
    }

    #[test]
    fn key_refs_parse_ids_by_their_form() {
        assert_eq!(
            KeyRef::parse("3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1"),
            KeyRef::Id("3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a1".into())
        );
        for alias in ["kps-escrow", "3C1D5A0E-8F6B-4E52-9D7A-21F0C4B8E6A1", "3c1d5a0e-8f6b-4e52-9d7a-21f0c4b8e6a"] {
            assert_eq!(KeyRef::parse(alias), KeyRef::Alias(alias.into()));
        }
    }

    #[test]
    fn data_key_debug_hides_the_plaintext() {
        let key = DataKey::new("id".into(), Zeroizing::new([0xAB; DATA_KEY_LEN]), "c1".into());
        assert!(!format!("{key:?}").to_lowercase().contains("abab"));
    }

    fn huawei_config() -> KmsConfig {
        KmsConfig {
            provider: Some("huawei".into()),
            endpoint: Some("http://127.0.0.1:9600".into()),
            project_id: Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9".into()),
            ..KmsConfig::default()
        }
    }

    #[test]
    fn from_config_without_provider_is_none_and_rejects_unknown_providers() {
        assert!(matches!(from_config(&KmsConfig::default(), false, None), Ok(None)));
        let config = KmsConfig { provider: Some("vault".into()), ..KmsConfig::default() };
        assert!(matches!(from_config(&config, false, None), Err(KmsConfigError::UnknownProvider(_))));
    }

    #[test]
    fn from_config_needs_credentials_and_a_project() {
        let config = huawei_config();
        assert!(matches!(from_config(&config, false, None), Err(KmsConfigError::Missing("kms.ak"))));
        let config = KmsConfig { ak: Some("AK".into()), sk: Some("SK".into()), project_id: None, ..huawei_config() };
        assert!(matches!(from_config(&config, false, None), Err(KmsConfigError::Missing("kms.project_id"))));
        let config = KmsConfig { ak: Some("AK".into()), sk: Some("SK".into()), ..huawei_config() };
        assert!(matches!(from_config(&config, false, None), Ok(Some(KmsClient::Huawei(_)))));
    }

    #[test]
    fn the_security_token_is_optional_printable_and_read_like_the_sk() {
        let base = KmsConfig { ak: Some("AK".into()), sk: Some("SK".into()), ..huawei_config() };
        assert!(security_token(&base, false).expect("unset").is_none());
        let config = KmsConfig { security_token: Some("tok en".into()), ..base.clone() };
        assert!(matches!(
            from_config(&config, false, None),
            Err(KmsConfigError::Invalid { name: "kms.security_token", .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "FROM-FILE\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let config = KmsConfig { security_token_file: Some(path.clone()), ..base.clone() };
        assert!(matches!(from_config(&config, false, None), Err(KmsConfigError::SecretFilePermissions { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(security_token(&config, false).expect("file").as_deref().map(String::as_str), Some("FROM-FILE"));
        let config = KmsConfig { security_token: Some("VALUE".into()), ..config };
        assert_eq!(security_token(&config, false).expect("value").as_deref().map(String::as_str), Some("VALUE"));
        assert!(!format!("{config:?}").contains("VALUE"), "redacted in Debug");
    }

    #[test]
    fn secret_files_must_not_be_group_or_world_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sk");
        std::fs::write(&path, "FROM-FILE\n").expect("write");
        let set_mode = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let read = |allow| secret_value("kms.sk", None, Some(&path), allow).map(|s| s.as_str().to_owned());

        set_mode(0o600);
        assert_eq!(read(false).expect("0600 is fine"), "FROM-FILE");
        set_mode(0o640);
        assert!(matches!(read(false), Err(KmsConfigError::SecretFilePermissions { mode: 0o640, .. })));
        assert_eq!(read(true).expect("0640 with allow_group_readable"), "FROM-FILE");
        set_mode(0o440);
        assert!(read(true).is_ok());
        set_mode(0o660);
        assert!(read(true).is_err(), "group-writable is refused even when group-readable is allowed");
        set_mode(0o644);
        assert!(read(true).is_err(), "world-readable is always refused");
        assert_eq!(
            secret_value("kms.sk", Some("VALUE"), Some(&path), true).expect("a value beats a file").as_str(),
            "VALUE"
        );
    }
}
