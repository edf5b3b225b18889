//! Layered configuration: built-in defaults < `config/kps.toml` (or `--config`/`KPS_CONFIG`) < the `KPS_*`
//! environment variables listed in `spec/interface.md` < command-line flags.
//!
//! There is no generic key-to-variable rule: `keys::KEYS` declares every key once, with its variable, and
//! the sample configuration (`config/kps.toml`, [`sample`]) is generated from it. `secret_file` is the one
//! reader of secret files.

pub mod keys;
pub mod secret_file;

pub use keys::sample;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {name}: {message}")]
    Invalid { name: String, value: String, message: String },
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub admin_listen: Option<String>,
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub policy: PolicyConfig,
    pub quota: QuotaConfig,
    pub keys: KeysConfig,
    pub custody: CustodyConfig,
    pub kms: KmsConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub secrets: SecretsConfig,
    pub keygen: KeygenConfig,
    pub cache: CacheConfig,
    pub store: StoreConfig,
    pub cors: CorsConfig,
    pub audit: AuditConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// PEM bundle: the trust anchors of outgoing TLS (KMS, Keystone, PostgreSQL), replacing the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Noauth,
    Static,
    Keystone,
    Aksk,
}

impl AuthMode {
    /// The mode's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Noauth => "noauth",
            Self::Static => "static",
            Self::Keystone => "keystone",
            Self::Aksk => "aksk",
        }
    }
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "noauth" => Ok(Self::Noauth),
            "static" => Ok(Self::Static),
            "keystone" => Ok(Self::Keystone),
            "aksk" => Ok(Self::Aksk),
            _ => Err("expected noauth, static, keystone or aksk".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub allow_noauth_remote: bool,
    pub tokens_file: Option<PathBuf>,
    pub keystone_url: Option<String>,
    pub keystone_cache_ttl_s: u64,
    pub credentials_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Noauth,
            allow_noauth_remote: false,
            tokens_file: None,
            keystone_url: None,
            keystone_cache_ttl_s: 60,
            credentials_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Key pairs per user; `-1` = unlimited.
    pub key_pairs: i64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self { key_pairs: 100 }
    }
}

/// Which imported keys are accepted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Imported RSA keys shorter than this are invalid (KPS.1204); generated keys are never shorter.
    pub min_rsa_bits: usize,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { min_rsa_bits: crate::keypair::DEFAULT_MIN_RSA_BITS }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustodyConfig {
    pub enabled: bool,
    pub allow_default: bool,
    pub master_key_file: Option<PathBuf>,
    /// The KMS key (alias or id) that wraps the master keyring: the file then holds only KMS ciphertext.
    pub master_key_kms_key: Option<String>,
}

impl Default for CustodyConfig {
    fn default() -> Self {
        Self { enabled: true, allow_default: true, master_key_file: None, master_key_kms_key: None }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KmsConfig {
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub project_id: Option<String>,
    pub region: Option<String>,
    pub ak: Option<String>,
    /// A secret: `Debug` shows `[REDACTED]`, the value is zeroized when dropped.
    #[serde(serialize_with = "redacted")]
    pub sk: Option<SecretString>,
    pub ak_file: Option<PathBuf>,
    pub sk_file: Option<PathBuf>,
    pub check_key: Option<String>,
    /// Temporary credentials: Huawei's `X-Security-Token`, AWS's session token. A secret like `sk`.
    #[serde(serialize_with = "redacted")]
    pub security_token: Option<SecretString>,
    pub security_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub per_caller_concurrency: u32,
    pub per_caller_rps: u32,
    pub request_timeout_s: u64,
    /// Seconds a connection may take to send complete request headers (also the idle keep-alive time).
    pub header_timeout_s: u64,
    /// Open client connections per listener; more wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 114_688,
            per_caller_concurrency: 0,
            per_caller_rps: 0,
            request_timeout_s: 60,
            header_timeout_s: 10,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The format's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    pub allow_group_readable: bool,
}

/// kps extension (no environment variable): key generation tuning.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeygenConfig {
    /// Pre-generated RSA-2048 keys kept ready in memory; 0 disables the pool.
    pub rsa_pool_size: usize,
}

impl Default for KeygenConfig {
    fn default() -> Self {
        Self { rsa_pool_size: 16 }
    }
}

/// kps extension (no environment variable): in-memory caches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// MiB of rendered list pages kept until a write to their owner (`page_cache`); 0 disables it.
    pub list_pages_mb: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { list_pages_mb: 32 }
    }
}

/// Where the records live (spec/interface.md, "Replicated store").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded, in `data_dir`; one process.
    #[default]
    Sled,
    /// One PostgreSQL database that any number of replicas share.
    Postgres,
}

impl StoreBackend {
    /// The backend's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Postgres => "postgres",
        }
    }
}

impl std::str::FromStr for StoreBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sled" => Ok(Self::Sled),
            "postgres" => Ok(Self::Postgres),
            _ => Err("expected sled or postgres".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// May carry a password: `Debug` shows `[REDACTED]`, never logged.
    #[serde(serialize_with = "redacted")]
    pub postgres_url: Option<SecretString>,
    pub postgres_url_file: Option<PathBuf>,
    pub postgres_pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { backend: StoreBackend::Sled, postgres_url: None, postgres_url_file: None, postgres_pool_size: 16 }
    }
}

/// Cross-origin access for browser consoles (oslo.middleware's `[cors]`); off while no origin is listed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`) whose pages may call kps; empty = CORS off.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer (`Access-Control-Max-Age`).
    pub max_age_s: u64,
}

/// The audit trail's own stream (`api::audit`): the `kps::audit` log lines are always written to the log; this
/// adds a JSON-lines file and whether custody requests depend on it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines audit file, appended, mode 0600; unset = the log only.
    pub file: Option<PathBuf>,
    /// Custody requests fail with 503 KPS.9006 when their audit line cannot be written to `file`.
    pub fail_closed: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_age_s: 3600 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8774".into(),
            admin_listen: None,
            data_dir: PathBuf::from("./data"),
            public_url: None,
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            policy: PolicyConfig::default(),
            quota: QuotaConfig::default(),
            keys: KeysConfig::default(),
            custody: CustodyConfig::default(),
            kms: KmsConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            secrets: SecretsConfig::default(),
            keygen: KeygenConfig::default(),
            cache: CacheConfig::default(),
            store: StoreConfig::default(),
            cors: CorsConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

/// Secrets are never serialized: `kps config check` prints the effective settings, and a set secret shows
/// as `"[REDACTED]"` there.
fn redacted<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[REDACTED]"),
        None => serializer.serialize_none(),
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub auth: Option<AuthMode>,
}

const DEFAULT_CONFIG_FILE: &str = "config/kps.toml";

impl Config {
    /// Builds the configuration from file, environment and flags, in that order of increasing precedence.
    pub fn load(overrides: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = overrides.config.clone().or_else(|| env("KPS_CONFIG").map(PathBuf::from));
        let mut config = match file {
            Some(path) => Self::from_file(&path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => Self::from_file(Path::new(DEFAULT_CONFIG_FILE))?,
            None => Self::default(),
        };
        for keys::Env { name, set } in keys::KEYS.iter().filter_map(|key| key.env.as_ref()) {
            if let Some(value) = env(name) {
                set(&mut config, &value).map_err(|message| ConfigError::Invalid {
                    name: (*name).to_owned(),
                    value: if name.ends_with("_SK")
                        || name.ends_with("_AK")
                        || name.contains("POSTGRES_URL")
                        || name.ends_with("_SECURITY_TOKEN")
                    {
                        "***".into()
                    } else {
                        value
                    },
                    message,
                })?;
            }
        }
        if let Some(listen) = &overrides.listen {
            config.listen.clone_from(listen);
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(mode) = overrides.auth {
            config.auth.mode = mode;
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.message().to_owned() })
    }

    /// The API listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("listen", &self.listen)
    }

    /// The address of the operations endpoints, when they are not served on `listen`.
    /// Where the CLI reaches a running server's admin API by default: `admin_listen` when set (the admin API
    /// is served there alone), else `listen`.
    pub fn admin_base_url(&self) -> String {
        format!("http://{}", self.admin_listen.as_deref().unwrap_or(&self.listen))
    }

    pub fn admin_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.admin_listen.as_deref().map(|addr| parse_addr("admin_listen", addr)).transpose()
    }

    /// The master keyring file: `custody.master_key_file`, else `<data_dir>/master.key`.
    /// `store.postgres_url`, or the text of `store.postgres_url_file` (a secret file) without its
    /// surrounding whitespace. Neither the URL nor any part of it is ever part of an error.
    pub fn postgres_url(&self) -> Result<zeroize::Zeroizing<String>, ConfigError> {
        use secrecy::ExposeSecret;
        let value = self.store.postgres_url.as_ref().map(|url| url.expose_secret());
        let file = self.store.postgres_url_file.as_deref();
        match secret_file::value_or_file(value, file, self.secrets.allow_group_readable) {
            Ok(Some(url)) => Ok(zeroize::Zeroizing::new(url.trim().to_owned())),
            Ok(None) => {
                Err(ConfigError::Unsupported("store.postgres_url or store.postgres_url_file is not set".into()))
            }
            Err(error) => Err(ConfigError::Unsupported(format!("store.postgres_url_file: {error}"))),
        }
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.custody.master_key_file.clone().unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// Key pairs allowed per user, `None` for unlimited.
    pub fn quota(&self) -> Option<u64> {
        u64::try_from(self.quota.key_pairs).ok()
    }

    /// Refuses settings this build cannot honour, and unsafe combinations, before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.listen_addr()?;
        self.admin_listen_addr()?;
        if self.quota.key_pairs < -1 {
            return Err(invalid("quota.key_pairs", &self.quota.key_pairs.to_string(), "must be -1 or >= 0"));
        }
        let rsa_bits = crate::keypair::MIN_RSA_BITS_FLOOR..=crate::keypair::RSA_MAX_BITS;
        if !rsa_bits.contains(&self.keys.min_rsa_bits) {
            let message = format!("must be between {} and {}", rsa_bits.start(), rsa_bits.end());
            return Err(invalid("keys.min_rsa_bits", &self.keys.min_rsa_bits.to_string(), &message));
        }
        if self.limits.max_body_bytes == 0 {
            return Err(invalid("limits.max_body_bytes", "0", "must be positive"));
        }
        if self.limits.request_timeout_s == 0 {
            return Err(invalid("limits.request_timeout_s", "0", "must be positive"));
        }
        if self.audit.fail_closed && self.audit.file.is_none() {
            // Fail-closed guards the writes to audit.file; without one it would promise what it cannot do.
            return Err(invalid("audit.fail_closed", "true", "needs audit.file (the audit stream it guards)"));
        }
        if self.limits.header_timeout_s == 0 {
            return Err(invalid("limits.header_timeout_s", "0", "must be positive"));
        }
        if self.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "0", "must be positive"));
        }
        for origin in &self.cors.allowed_origins {
            if !is_exact_origin(origin) {
                let message = "must be an exact origin: http(s)://host[:port], no path, no wildcard";
                return Err(invalid("cors.allowed_origins", origin, message));
            }
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("public_url", url, "must start with http:// or https://"));
        }
        if self.auth.mode == AuthMode::Noauth && !listen.ip().is_loopback() && !self.auth.allow_noauth_remote {
            return Err(ConfigError::Unsupported(format!(
                "auth.mode = noauth refuses to listen on the non-loopback address {listen}; set \
                 auth.allow_noauth_remote = true to allow it (development only)"
            )));
        }
        if self.store.postgres_pool_size == 0 {
            return Err(invalid("store.postgres_pool_size", "0", "must be positive"));
        }
        if self.store.backend == StoreBackend::Postgres {
            if self.store.postgres_url.is_none() && self.store.postgres_url_file.is_none() {
                return Err(ConfigError::Unsupported(
                    "store.backend = postgres needs store.postgres_url or store.postgres_url_file \
                     (KPS_STORE_POSTGRES_URL, KPS_STORE_POSTGRES_URL_FILE)"
                        .into(),
                ));
            }
            if self.custody.allow_default && self.custody.master_key_file.is_none() {
                return Err(ConfigError::Unsupported(
                    "store.backend = postgres needs custody.master_key_file (KPS_MASTER_KEY_FILE): the master \
                     keyring every replica shares; kps never creates one for a replicated store"
                        .into(),
                ));
            }
        }
        if self.custody.master_key_kms_key.is_some() && self.kms.provider.is_none() {
            return Err(ConfigError::Unsupported(
                "custody.master_key_kms_key needs a KMS: set kms.provider (huawei or aws) and its kms.* settings"
                    .into(),
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Unsupported(
                "TLS needs both tls.cert_file and tls.key_file (KPS_TLS_CERT_FILE, KPS_TLS_KEY_FILE)".into(),
            ));
        }
        Ok(())
    }
}

fn invalid(name: &str, value: &str, message: &str) -> ConfigError {
    ConfigError::Invalid { name: name.into(), value: value.into(), message: message.into() }
}

fn parse_addr(name: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e: std::net::AddrParseError| invalid(name, value, &e.to_string()))
}

/// `scheme://host[:port]` as a browser sends it in `Origin`: http or https, a host of lowercase letters, digits, `.`,
/// `-` (or a bracketed IPv6 address), an optional port, nothing else. Browsers compare origins exactly, so
/// a pattern or a trailing slash would never match.
fn is_exact_origin(origin: &str) -> bool {
    let Some(authority) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return false;
    };
    !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:[]".contains(&b))
        && !authority.starts_with([':', '.', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)], overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::load(overrides, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_interface_table() {
        let config = Config::default();
        assert_eq!(config.listen, "127.0.0.1:8774");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.auth.mode, AuthMode::Noauth);
        assert_eq!(config.quota(), Some(100));
        assert_eq!(config.limits.max_body_bytes, 114_688);
        assert_eq!(config.limits.request_timeout_s, 60);
        assert!(config.custody.enabled && config.custody.allow_default);
        config.validate().expect("defaults are valid");
    }

    /// Issue 11.12: the KMS secret key never shows in `Debug` (a config printed in a log or a panic), whether
    /// it came from the file or the environment, and still reaches the KMS client.
    #[test]
    fn the_kms_secret_key_is_redacted_in_debug() {
        use secrecy::ExposeSecret;
        const FILE_SK: &str = "sk-from-the-file-0123456789";
        const ENV_SK: &str = "sk-from-the-environment-9876543210";
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("kps.toml");
        std::fs::write(&file, format!("[kms]\nprovider = \"huawei\"\nak = \"AK\"\nsk = \"{FILE_SK}\"\n"))
            .expect("write");
        let overrides = Overrides { config: Some(file), ..Overrides::default() };
        let from_file = load(&[], &overrides).expect("load");
        let from_env = load(&[("KPS_KMS_SK", ENV_SK)], &overrides).expect("load");
        for (config, sk) in [(&from_file, FILE_SK), (&from_env, ENV_SK)] {
            assert_eq!(config.kms.sk.as_ref().map(|sk| sk.expose_secret()), Some(sk));
            for shown in [format!("{:?}", config.kms), format!("{config:?}"), format!("{config:#?}")] {
                assert!(!shown.contains(sk), "{shown}");
                assert!(shown.contains("REDACTED"), "{shown}");
            }
        }
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("kps.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[quota]\nkey_pairs = 5\n").expect("write");
        let overrides = Overrides { config: Some(file.clone()), ..Overrides::default() };
        let config = load(&[("KPS_LISTEN", "127.0.0.1:2")], &overrides).expect("load");
        assert_eq!(config.listen, "127.0.0.1:2");
        assert_eq!(config.quota(), Some(5));
        let overrides = Overrides { config: Some(file), listen: Some("127.0.0.1:3".into()), ..Overrides::default() };
        let config = load(&[("KPS_LISTEN", "127.0.0.1:2")], &overrides).expect("load");
        assert_eq!(config.listen, "127.0.0.1:3");
    }

    #[test]
    fn unlimited_quota_is_minus_one() {
        let config = load(&[("KPS_QUOTA_KEY_PAIRS", "-1")], &Overrides::default()).expect("load");
        assert_eq!(config.quota(), None);
    }

    #[test]
    fn min_rsa_bits_defaults_to_2048_and_stays_within_the_rsa_range() {
        assert_eq!(Config::default().keys.min_rsa_bits, 2048);
        let config = load(&[("KPS_KEYS_MIN_RSA_BITS", "3072")], &Overrides::default()).expect("load");
        assert_eq!(config.keys.min_rsa_bits, 3072);
        config.validate().expect("valid");
        for bad in ["512", "16385"] {
            let config = load(&[("KPS_KEYS_MIN_RSA_BITS", bad)], &Overrides::default()).expect("load");
            let error = config.validate().expect_err(bad).to_string();
            assert!(error.contains("keys.min_rsa_bits") && error.contains("between 1024 and 16384"), "{error}");
        }
    }

    #[test]
    fn cors_origins_are_read_comma_separated_and_must_be_exact() {
        let variable = "https://console.example.com, http://localhost:8080,";
        let config = load(&[("KPS_CORS_ALLOWED_ORIGINS", variable)], &Overrides::default()).expect("load");
        assert_eq!(config.cors.allowed_origins, ["https://console.example.com", "http://localhost:8080"]);
        config.validate().expect("exact origins are valid");
        for bad in [
            "*",
            "https://*.example.com",
            "https://console.example.com/",
            "console.example.com",
            "null",
            "https://Console.example.com",
        ] {
            let config = load(&[("KPS_CORS_ALLOWED_ORIGINS", bad)], &Overrides::default()).expect("load");
            let error = config.validate().expect_err(bad).to_string();
            assert!(error.contains("cors.allowed_origins") && error.contains("exact origin"), "{bad}: {error}");
        }
        assert!(Config::default().cors.allowed_origins.is_empty(), "CORS is off by default");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let error = load(&[("KPS_CUSTODY_ENABLED", "yes")], &Overrides::default()).expect_err("bad bool");
        assert!(error.to_string().contains("KPS_CUSTODY_ENABLED"), "{error}");
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("kps.toml");
        std::fs::write(&file, "lisen = \"x\"\n").expect("write");
        assert!(Config::from_file(&file).is_err());
    }

    #[test]
    fn shipped_config_file_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kps.toml");
        let text = std::fs::read_to_string(&path).expect("config/kps.toml");
        let uncommented: String = text
            .lines()
            .map(|line| {
                if line.starts_with('[') {
                    return line;
                }
                let is_setting = |l: &&str| {
                    l.split_once(" = ").is_some_and(|(key, _)| key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                };
                line.strip_prefix("# ").filter(is_setting).unwrap_or("")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config: Config = toml::from_str(&uncommented).expect("uncommented config parses");
        let defaults = Config::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.quota.key_pairs, defaults.quota.key_pairs);
        assert_eq!(config.keys.min_rsa_bits, defaults.keys.min_rsa_bits);
        assert_eq!(config.limits.max_body_bytes, defaults.limits.max_body_bytes);
        assert_eq!(config.keygen.rsa_pool_size, defaults.keygen.rsa_pool_size);
        assert_eq!(config.cache.list_pages_mb, defaults.cache.list_pages_mb);
    }

    #[test]
    fn noauth_refuses_a_remote_listen_address() {
        let config = Config { listen: "0.0.0.0:8774".into(), ..Config::default() };
        assert!(config.validate().is_err());
        let mut config = config;
        config.auth.allow_noauth_remote = true;
        config.validate().expect("explicitly allowed");
    }

    #[test]
    fn audit_fail_closed_needs_an_audit_file() {
        let mut config = Config::default();
        config.audit.fail_closed = true;
        let error = config.validate().expect_err("no file");
        assert!(error.to_string().contains("needs audit.file"), "{error}");
        config.audit.file = Some(PathBuf::from("/var/log/kps/audit.jsonl"));
        config.validate().expect("with a file");
    }

    #[test]
    fn the_master_keyring_is_in_the_data_dir_unless_named() {
        let mut config = Config { data_dir: PathBuf::from("/var/lib/kps"), ..Config::default() };
        assert_eq!(config.master_key_path(), PathBuf::from("/var/lib/kps/master.key"));
        config.custody.master_key_file = Some(PathBuf::from("/etc/kps/master.key"));
        assert_eq!(config.master_key_path(), PathBuf::from("/etc/kps/master.key"));
    }

    #[test]
    fn the_store_settings_are_read_and_the_url_is_never_shown() {
        let config = load(
            &[
                ("KPS_STORE_BACKEND", "postgres"),
                ("KPS_STORE_POSTGRES_URL", "postgresql://kps:s3cret@db/kps"),
                ("KPS_STORE_POSTGRES_POOL_SIZE", "4"),
            ],
            &Overrides::default(),
        )
        .expect("load");
        assert_eq!((config.store.backend, config.store.postgres_pool_size), (StoreBackend::Postgres, 4));
        assert!(!format!("{config:?}").contains("s3cret"));
        let error = load(&[("KPS_STORE_BACKEND", "mysql")], &Overrides::default()).expect_err("no mysql");
        assert!(error.to_string().contains("expected sled or postgres"), "{error}");
    }
}
