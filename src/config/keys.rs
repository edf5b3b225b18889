//! The one table of configuration keys (style.md rule 13). Every key is declared here once — its path, its
//! environment variable and flag, whether it is set by default, and what it means — and the rest is derived:
//! `Config::load` reads exactly the environment variables of [`KEYS`], and [`sample`] writes the sample
//! configuration shipped as `config/kps.toml` (`kps config sample > config/kps.toml`), with the defaults
//! taken from `Config::default()`, never retyped. Tests fail when the shipped file differs from [`sample`],
//! when a field of [`Config`] has no key here, or when a key here (but a not-implemented-yet one) is not a
//! field.
//!
//! This module only describes and renders; it reads no file and no environment.

use secrecy::SecretString;

use super::{Config, LogFormat};

/// One configuration key.
pub struct Key {
    /// `table.name`, or `name` for a top-level key.
    pub path: &'static str,
    /// The environment variable that sets the key; `None` for the kps extensions that have none.
    pub env: Option<Env>,
    /// The `kps serve` flag that sets the key, if any (`--listen`).
    pub flag: Option<&'static str>,
    /// How the sample shows the key.
    pub shown: Shown,
    /// What the key means, in a sentence or a few; the sample wraps it and adds the variable and the flag.
    pub meaning: &'static str,
}

/// An environment variable and how its value is applied to the configuration.
pub struct Env {
    pub name: &'static str,
    pub set: Setter,
}

/// Applies an environment variable's value; the error says what was expected.
pub type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// How the sample shows a key.
pub enum Shown {
    /// Set by default: `# key = <the key's value in Config::default(), as TOML>`.
    Default(fn(&Config) -> String),
    /// Unset by default: `#key = <this example, as TOML>`.
    Example(&'static str),
}

const fn env(name: &'static str, set: Setter) -> Option<Env> {
    Some(Env { name, set })
}

fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse::<T>().map_err(|e| e.to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A string as a TOML value (quoted, escaped).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Every configuration key, in the order of the sample: top-level keys first, then one run per table.
pub const KEYS: &[Key] = &[
    Key {
        path: "listen",
        env: env("KPS_LISTEN", |c, v| {
            c.listen = v.to_owned();
            Ok(())
        }),
        flag: Some("--listen"),
        shown: Shown::Default(|c| quoted(&c.listen)),
        meaning: "API address",
    },
    Key {
        path: "admin_listen",
        env: env("KPS_ADMIN_LISTEN", |c, v| {
            c.admin_listen = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"127.0.0.1:9774\""),
        meaning: "Serve /healthz, /readyz, /metrics, /openapi.json and the admin API /admin/v1/* on this address \
                  only (404 on `listen`); the first four need no authentication, so keep it private",
    },
    Key {
        path: "data_dir",
        env: env("KPS_DATA_DIR", |c, v| {
            c.data_dir = v.into();
            Ok(())
        }),
        flag: Some("--data-dir"),
        shown: Shown::Default(|c| quoted(&c.data_dir.to_string_lossy())),
        meaning: "Store directory, created 0700; kps refuses to start when it is group- or world-accessible",
    },
    Key {
        path: "public_url",
        env: env("KPS_PUBLIC_URL", |c, v| {
            c.public_url = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"https://kps.example.com\""),
        meaning: "Base URL (http:// or https://) for version documents and keypairs_links; unset = \
                  http://<Host header>",
    },
    Key {
        path: "tls.cert_file",
        env: env("KPS_TLS_CERT_FILE", |c, v| {
            c.tls.cert_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/tls.crt\""),
        meaning: "PEM certificate chain: with tls.key_file, serve HTTPS (rustls); both or neither",
    },
    Key {
        path: "tls.key_file",
        env: env("KPS_TLS_KEY_FILE", |c, v| {
            c.tls.key_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/tls.key\""),
        meaning: "PEM private key of tls.cert_file; a secret file: mode 0600, or 0440/0640 with \
                  secrets.allow_group_readable, never world-readable",
    },
    Key {
        path: "tls.ca_file",
        env: env("KPS_TLS_CA_FILE", |c, v| {
            c.tls.ca_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/ca-bundle.pem\""),
        meaning: "PEM CA bundle for kps's outgoing TLS (the KMS, Keystone, PostgreSQL): it replaces the system's \
                  roots, as keystoneauth's cafile does; read at startup, a missing, empty or invalid file refuses \
                  to start; a PostgreSQL URL's own sslrootcert still wins for the database; unset = system roots",
    },
    Key {
        path: "auth.mode",
        env: env("KPS_AUTH", |c, v| {
            c.auth.mode = parse(v)?;
            Ok(())
        }),
        flag: Some("--auth"),
        shown: Shown::Default(|c| quoted(c.auth.mode.as_str())),
        meaning: "noauth | static | keystone | aksk; noauth is for development and refuses a non-loopback \
                  address unless allow_noauth_remote",
    },
    Key {
        path: "auth.allow_noauth_remote",
        env: env("KPS_AUTH_ALLOW_NOAUTH_REMOTE", |c, v| {
            c.auth.allow_noauth_remote = parse_bool(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.auth.allow_noauth_remote.to_string()),
        meaning: "Allow noauth on a non-loopback address",
    },
    Key {
        path: "auth.tokens_file",
        env: env("KPS_AUTH_TOKENS_FILE", |c, v| {
            c.auth.tokens_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/tokens.toml\""),
        meaning: "static mode: tokens file with SHA-256 hashes of tokens, read at startup; a secret file, mode \
                  0600",
    },
    Key {
        path: "auth.keystone_url",
        env: env("KPS_AUTH_KEYSTONE_URL", |c, v| {
            c.auth.keystone_url = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"http://127.0.0.1:5000\""),
        meaning: "keystone mode: Keystone v3 base URL, http:// or https://, with or without /v3",
    },
    Key {
        path: "auth.keystone_cache_ttl_s",
        env: env("KPS_AUTH_KEYSTONE_CACHE_TTL_S", |c, v| {
            c.auth.keystone_cache_ttl_s = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.auth.keystone_cache_ttl_s.to_string()),
        meaning: "Seconds a Keystone validation (valid or invalid) is cached, never past expires_at; 0 = off",
    },
    Key {
        path: "auth.credentials_file",
        env: env("KPS_AUTH_CREDENTIALS_FILE", |c, v| {
            c.auth.credentials_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/credentials.toml\""),
        meaning: "aksk mode: AK/SK credentials file (Huawei SDK-HMAC-SHA256 signatures), read at startup; a secret \
                  file, mode 0600",
    },
    Key {
        path: "policy.file",
        env: env("KPS_POLICY_FILE", |c, v| {
            c.policy.file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/policy.toml\""),
        meaning: "Policy overrides: an oslo.policy file in YAML or JSON (.yaml/.yml/.json; `kps policy sample`), or \
                  TOML with one `\"action\" = \"rule\"` per line (quoted: names contain \":\"); unset = built-in \
                  default policy",
    },
    Key {
        path: "quota.key_pairs",
        env: env("KPS_QUOTA_KEY_PAIRS", |c, v| {
            c.quota.key_pairs = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.quota.key_pairs.to_string()),
        meaning: "Key pairs per user; -1 = unlimited",
    },
    Key {
        path: "keys.min_rsa_bits",
        env: env("KPS_KEYS_MIN_RSA_BITS", |c, v| {
            c.keys.min_rsa_bits = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.keys.min_rsa_bits.to_string()),
        meaning: "Imported RSA keys (public key, private key, certificate key) shorter than this are invalid, 400 \
                  KPS.1204; generated keys are never shorter; keys above 16384 bits are always refused",
    },
    Key {
        path: "custody.enabled",
        env: env("KPS_CUSTODY_ENABLED", |c, v| {
            c.custody.enabled = parse_bool(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.custody.enabled.to_string()),
        meaning: "Allow escrowing and revealing private keys; else KPS.1901",
    },
    Key {
        path: "custody.allow_default",
        env: env("KPS_CUSTODY_ALLOW_DEFAULT", |c, v| {
            c.custody.allow_default = parse_bool(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.custody.allow_default.to_string()),
        meaning: "Accept encryption.type = default; else KPS.1403",
    },
    Key {
        path: "custody.master_key_file",
        env: env("KPS_MASTER_KEY_FILE", |c, v| {
            c.custody.master_key_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/master.key\""),
        meaning: "Master keyring of the default encryptor, a secret file, mode 0600; unset = <data_dir>/master.key, \
                  created by the first start of a store that never used one",
    },
    Key {
        path: "custody.master_key_kms_key",
        env: env("KPS_CUSTODY_MASTER_KEY_KMS_KEY", |c, v| {
            c.custody.master_key_kms_key = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"kps-master\""),
        meaning: "Auto-unseal: the KMS key (alias or id, of kms.provider) that wraps the master keyring, which then \
                  holds only KMS ciphertext (kps master-key generate --kms-key, kps master-key wrap); kps refuses a \
                  plaintext keyring while it is set. Startup unwraps it with one KMS call; with the KMS unreachable \
                  default custody answers 503 KPS.1801 until a background retry succeeds",
    },
    Key {
        path: "kms.provider",
        env: env("KPS_KMS_PROVIDER", |c, v| {
            c.kms.provider = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"huawei\""),
        meaning: "huawei | aws; unset = no KMS",
    },
    Key {
        path: "kms.endpoint",
        env: env("KPS_KMS_ENDPOINT", |c, v| {
            c.kms.endpoint = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"http://127.0.0.1:8780\""),
        meaning: "KMS base URL, http:// or https://; unset = the provider's: huawei \
                  https://kms.<region>.myhuaweicloud.com, aws the SDK's regional endpoint",
    },
    Key {
        path: "kms.project_id",
        env: env("KPS_KMS_PROJECT_ID", |c, v| {
            c.kms.project_id = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"0a1b2c3d4e5f60718293a4b5c6d7e8f9\""),
        meaning: "huawei: project id in KMS paths; required",
    },
    Key {
        path: "kms.region",
        env: env("KPS_KMS_REGION", |c, v| {
            c.kms.region = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"cn-north-4\""),
        meaning: "Region; huawei: gives the default endpoint (kms.endpoint or kms.region is required); aws: \
                  required",
    },
    Key {
        path: "kms.ak",
        env: env("KPS_KMS_AK", |c, v| {
            c.kms.ak = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"...\""),
        meaning: "Credential value, huawei: AK, aws: access key id; a value beats kms.ak_file",
    },
    Key {
        path: "kms.sk",
        env: env("KPS_KMS_SK", |c, v| {
            c.kms.sk = Some(SecretString::from(v));
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"...\""),
        meaning: "Credential value, huawei: SK, aws: secret access key; a value beats kms.sk_file",
    },
    Key {
        path: "kms.ak_file",
        env: env("KPS_KMS_AK_FILE", |c, v| {
            c.kms.ak_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/kms.ak\""),
        meaning: "Path of a file holding kms.ak, surrounding whitespace ignored; a secret file, mode 0600; read \
                  again when it changes",
    },
    Key {
        path: "kms.sk_file",
        env: env("KPS_KMS_SK_FILE", |c, v| {
            c.kms.sk_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/kms.sk\""),
        meaning: "Path of a file holding kms.sk, surrounding whitespace ignored; a secret file, mode 0600; read \
                  again when it changes",
    },
    Key {
        path: "kms.check_key",
        env: env("KPS_KMS_CHECK_KEY", |c, v| {
            c.kms.check_key = Some(v.to_owned());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"kps-escrow\""),
        meaning: "Alias or key id resolved once at startup; failure only logs a warning",
    },
    Key {
        path: "kms.security_token",
        env: env("KPS_KMS_SECURITY_TOKEN", |c, v| {
            c.kms.security_token = Some(SecretString::from(v));
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"...\""),
        meaning: "Temporary credentials with kms.ak/kms.sk: huawei: the security token, sent as X-Security-Token \
                  and signed; aws: the session token (x-amz-security-token); a value beats kms.security_token_file",
    },
    Key {
        path: "kms.security_token_file",
        env: env("KPS_KMS_SECURITY_TOKEN_FILE", |c, v| {
            c.kms.security_token_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/kms.token\""),
        meaning: "Path of a file holding kms.security_token, surrounding whitespace ignored; a secret file, mode \
                  0600; read again when it changes (renewed temporary credentials need no restart)",
    },
    Key {
        path: "limits.max_body_bytes",
        env: env("KPS_LIMITS_MAX_BODY_BYTES", |c, v| {
            c.limits.max_body_bytes = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.limits.max_body_bytes.to_string()),
        meaning: "Request body limit in bytes, 413 KPS.1008 above it",
    },
    Key {
        path: "limits.per_caller_concurrency",
        env: env("KPS_LIMITS_PER_CALLER_CONCURRENCY", |c, v| {
            c.limits.per_caller_concurrency = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.limits.per_caller_concurrency.to_string()),
        meaning: "In-flight requests per caller = authenticated (user_id, project_id); over it: 429 KPS.1015 with \
                  Retry-After; 0 = unlimited",
    },
    Key {
        path: "limits.per_caller_rps",
        env: env("KPS_LIMITS_PER_CALLER_RPS", |c, v| {
            c.limits.per_caller_rps = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.limits.per_caller_rps.to_string()),
        meaning: "Requests per second per caller (token bucket, bursts up to one second's worth); over it: 429 \
                  KPS.1015 with Retry-After; 0 = unlimited",
    },
    Key {
        path: "limits.request_timeout_s",
        env: env("KPS_LIMITS_REQUEST_TIMEOUT_S", |c, v| {
            c.limits.request_timeout_s = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.limits.request_timeout_s.to_string()),
        meaning: "Whole-request deadline in seconds, 503 KPS.9004 after it; must exceed the 25 s KMS budget",
    },
    Key {
        path: "limits.header_timeout_s",
        env: env("KPS_LIMITS_HEADER_TIMEOUT_S", |c, v| {
            c.limits.header_timeout_s = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.limits.header_timeout_s.to_string()),
        meaning: "Seconds a connection may take to send complete request headers (a TLS handshake included); also \
                  how long an idle keep-alive connection stays open",
    },
    Key {
        path: "limits.max_connections",
        env: env("KPS_LIMITS_MAX_CONNECTIONS", |c, v| {
            c.limits.max_connections = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.limits.max_connections.to_string()),
        meaning: "Open client connections per listener; beyond it new connections wait in the kernel backlog",
    },
    Key {
        path: "log.format",
        env: env("KPS_LOG_FORMAT", |c, v| {
            c.log.format = match v {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err("expected text or json".into()),
            };
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| quoted(c.log.format.as_str())),
        meaning: "text | json, one object per line. Filter with KPS_LOG (e.g. \"info\", \"kps=debug\"); custody \
                  actions are logged with target kps::audit, so KPS_LOG=\"warn,kps::audit=info\"keeps only them",
    },
    Key {
        path: "secrets.allow_group_readable",
        env: env("KPS_SECRETS_ALLOW_GROUP_READABLE", |c, v| {
            c.secrets.allow_group_readable = parse_bool(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.secrets.allow_group_readable.to_string()),
        meaning: "Accept group-readable (never world-readable) secret files: the master keyring, the tokens and \
                  credentials files, the KMS credential files and the TLS key; systemd LoadCredential and Kubernetes \
                  secret mounts give 0440",
    },
    Key {
        path: "keygen.rsa_pool_size",
        env: None,
        flag: None,
        shown: Shown::Default(|c| c.keygen.rsa_pool_size.to_string()),
        meaning: "kps extension: pre-generated RSA-2048 keys kept in memory for fast creates; 0 = off",
    },
    Key {
        path: "cache.list_pages_mb",
        env: None,
        flag: None,
        shown: Shown::Default(|c| c.cache.list_pages_mb.to_string()),
        meaning: "kps extension: MiB of rendered list pages kept until a write to their owner; 0 = off",
    },
    Key {
        path: "store.backend",
        env: env("KPS_STORE_BACKEND", |c, v| {
            c.store.backend = v.parse()?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| quoted(c.store.backend.as_str())),
        meaning: "sled (embedded, one process, in data_dir) | postgres (one database shared by N replicas; needs \
                  store.postgres_url or store.postgres_url_file, and custody.master_key_file)",
    },
    Key {
        path: "store.postgres_url",
        env: env("KPS_STORE_POSTGRES_URL", |c, v| {
            c.store.postgres_url = Some(SecretString::from(v));
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"postgresql://kps@db1:5432,db2:5432/kps?target_session_attrs=read-write\""),
        meaning: "libpq connection string or URI; several hosts allowed; host=/run/postgresql sockets too; \
                  sslmode=disable|prefer|require|verify-ca|verify-full, sslrootcert=FILE (else tls.ca_file, else the \
                  system roots); a value beats store.postgres_url_file",
    },
    Key {
        path: "store.postgres_url_file",
        env: env("KPS_STORE_POSTGRES_URL_FILE", |c, v| {
            c.store.postgres_url_file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/etc/kps/postgres_url\""),
        meaning: "Path of a file holding store.postgres_url, surrounding whitespace ignored; it may carry a \
                  password: a secret file, mode 0600",
    },
    Key {
        path: "store.postgres_pool_size",
        env: env("KPS_STORE_POSTGRES_POOL_SIZE", |c, v| {
            c.store.postgres_pool_size = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.store.postgres_pool_size.to_string()),
        meaning: "Connections per replica",
    },
    Key {
        path: "cors.allowed_origins",
        env: env("KPS_CORS_ALLOWED_ORIGINS", |c, v| {
            c.cors.allowed_origins =
                v.split(',').map(str::trim).filter(|origin| !origin.is_empty()).map(str::to_owned).collect();
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("[\"https://console.example.com\"]"),
        meaning: "Origins whose browser pages may call kps (CORS, as oslo.middleware's [cors] allowed_origin): \
                  exact scheme://host[:port] values, no wildcard; the variable takes them comma-separated; \
                  none = CORS off, no CORS header is ever sent",
    },
    Key {
        path: "cors.max_age_s",
        env: env("KPS_CORS_MAX_AGE_S", |c, v| {
            c.cors.max_age_s = parse(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.cors.max_age_s.to_string()),
        meaning: "Seconds a browser may cache a preflight answer (Access-Control-Max-Age)",
    },
    Key {
        path: "audit.file",
        env: env("KPS_AUDIT_FILE", |c, v| {
            c.audit.file = Some(v.into());
            Ok(())
        }),
        flag: None,
        shown: Shown::Example("\"/var/log/kps/audit.jsonl\""),
        meaning: "The audit trail as its own stream: one JSON line per custody attempt and outcome, appended and \
                  synced before the answer, mode 0600 (created so; refused when group- or world-accessible); \
                  unset = the kps::audit lines of the log only",
    },
    Key {
        path: "audit.fail_closed",
        env: env("KPS_AUDIT_FAIL_CLOSED", |c, v| {
            c.audit.fail_closed = parse_bool(v)?;
            Ok(())
        }),
        flag: None,
        shown: Shown::Default(|c| c.audit.fail_closed.to_string()),
        meaning: "With audit.file: a custody request whose audit line cannot be written (full disk, I/O error) \
                  fails with 503 KPS.9006 and reveals nothing, as Vault does; false = the request goes on and the \
                  failure is logged and counted (kps_audit_write_failures_total)",
    },
];

const HEADER: &str = "\
# kps configuration, generated from the code (src/config/keys.rs) by `kps config sample`.
# Every key is listed with its default, commented out: uncomment to change it.
# Precedence: command-line flag > KPS_* environment variable > this file > built-in default. This file is
# --config FILE or KPS_CONFIG, else config/kps.toml if present.
# Keys shown as `#key = ...` (no space after #) are unset by default; the value is an example.
";

/// Where the sample wraps its comment lines.
const WIDTH: usize = 110;

/// The sample configuration: every key of [`KEYS`] commented out with its default from `Config::default()`
/// or an example, under its meaning, its environment variable and its flag. Shipped as `config/kps.toml`.
pub fn sample() -> String {
    let defaults = Config::default();
    let mut out = String::from(HEADER);
    let mut current_table = "";
    for key in KEYS {
        let (table, name) = key.path.rsplit_once('.').unwrap_or(("", key.path));
        if table.is_empty() || table != current_table {
            out.push('\n');
        }
        if table != current_table {
            out.push_str(&format!("[{table}]\n"));
            current_table = table;
        }
        let source = match (&key.env, key.flag) {
            (Some(env), Some(flag)) => format!("env {}, flag {flag}", env.name),
            (Some(env), None) => format!("env {}", env.name),
            (None, _) => "no env variable".to_owned(),
        };
        push_comment(&mut out, &format!("{} ({source}).", key.meaning));
        out.push_str(&match &key.shown {
            Shown::Default(value) => format!("# {name} = {}\n", value(&defaults)),
            Shown::Example(example) => format!("#{name} = {example}\n"),
        });
    }
    out
}

/// `text` as `## ` comment lines of at most [`WIDTH`] characters (a longer word stays whole).
fn push_comment(out: &mut String, text: &str) {
    let mut line = String::from("##");
    for word in text.split_whitespace() {
        if line.len() > 2 && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("##");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::{HashMap, HashSet};
    use std::path::Path;

    use serde::Deserialize;

    use super::*;
    use crate::config::{
        AuditConfig, AuthConfig, CacheConfig, CorsConfig, CustodyConfig, KeygenConfig, KeysConfig, KmsConfig,
        LimitsConfig, LogConfig, Overrides, PolicyConfig, QuotaConfig, SecretsConfig, StoreConfig, TlsConfig,
    };

    /// The sample's TOML with the chosen lines uncommented: the `# key = default` lines, and with `examples`
    /// the `#key = example` lines of the implemented tables too.
    fn uncommented(sample: &str, examples: bool) -> String {
        let is_setting = |line: &&str| {
            line.split_once(" = ").is_some_and(|(key, _)| key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        };
        let mut implemented = true;
        let mut out = Vec::new();
        for line in sample.lines() {
            if line.starts_with('[') || line.starts_with("#[") {
                implemented = line.starts_with('[');
                out.push(if implemented { line } else { "" });
            } else if let Some(setting) = line.strip_prefix("# ").filter(is_setting) {
                out.push(setting);
            } else if let Some(example) = line.strip_prefix('#').filter(is_setting) {
                out.push(if examples && implemented { example } else { "" });
            }
        }
        out.join("\n")
    }

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The configuration from one environment variable (and an empty config file, not ./config/kps.toml).
    fn load_with_env(name: &str, value: &str) -> Config {
        let env = HashMap::from([(name, value), ("KPS_CONFIG", "/dev/null")]);
        Config::load(&Overrides::default(), |name| env.get(name).map(|value| (*value).to_owned()))
            .unwrap_or_else(|e| panic!("{name}={value}: {e}"))
    }

    /// The TOML value of a key in the sample as an environment variable spells it (no quotes).
    fn as_env_value(toml_value: &str) -> String {
        let table: toml::Table = toml::from_str(&format!("v = {toml_value}")).expect("a TOML value");
        match &table["v"] {
            toml::Value::String(text) => text.clone(),
            // A list variable takes its items comma-separated (cors.allowed_origins).
            toml::Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        }
    }

    /// The field names serde's derive gives a struct, read from its `deserialize_struct` call.
    fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Recorder(Cell<&'static [&'static str]>);
        impl<'de> serde::Deserializer<'de> for &Recorder {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("only the field names are read"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.set(fields);
                Err(serde::de::Error::custom("only the field names are read"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
                unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let recorder = Recorder(Cell::new(&[]));
        let _ = T::deserialize(&recorder);
        recorder.0.get()
    }

    #[test]
    fn the_shipped_config_file_is_the_sample() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kps.toml");
        let shipped = std::fs::read_to_string(&path).expect("config/kps.toml");
        let sample = sample();
        if shipped != sample {
            let line = shipped
                .lines()
                .zip(sample.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| shipped.lines().count().min(sample.lines().count()) + 1, |index| index + 1);
            panic!(
                "config/kps.toml differs from the sample the code generates (first at line {line}); regenerate it \
                 with `cargo run -- config sample > config/kps.toml`"
            );
        }
    }

    #[test]
    fn the_sample_uncommented_is_the_defaults() {
        let config = parse(&uncommented(&sample(), false));
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn the_examples_are_keys_of_their_tables() {
        let config = parse(&uncommented(&sample(), true));
        assert_ne!(format!("{config:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn every_field_of_config_is_a_declared_key_and_every_key_a_field() {
        let tables: [(&str, &[&str]); 15] = [
            ("tls", fields_of::<TlsConfig>()),
            ("auth", fields_of::<AuthConfig>()),
            ("policy", fields_of::<PolicyConfig>()),
            ("quota", fields_of::<QuotaConfig>()),
            ("keys", fields_of::<KeysConfig>()),
            ("custody", fields_of::<CustodyConfig>()),
            ("kms", fields_of::<KmsConfig>()),
            ("limits", fields_of::<LimitsConfig>()),
            ("log", fields_of::<LogConfig>()),
            ("secrets", fields_of::<SecretsConfig>()),
            ("keygen", fields_of::<KeygenConfig>()),
            ("cache", fields_of::<CacheConfig>()),
            ("store", fields_of::<StoreConfig>()),
            ("cors", fields_of::<CorsConfig>()),
            ("audit", fields_of::<AuditConfig>()),
        ];
        let mut fields = HashSet::new();
        for field in fields_of::<Config>() {
            match tables.iter().find(|(table, _)| table == field) {
                Some((table, names)) => fields.extend(names.iter().map(|name| format!("{table}.{name}"))),
                None => _ = fields.insert((*field).to_owned()),
            }
        }
        assert!(fields.len() > 30, "the field names were read: {fields:?}");
        let declared: HashSet<String> = KEYS.iter().map(|key| key.path.to_owned()).collect();
        for field in &fields {
            assert!(
                declared.contains(field),
                "Config field {field} is not declared in config::keys::KEYS (a new table: add its struct here too)"
            );
        }
        for key in &declared {
            assert!(fields.contains(key), "config::keys::KEYS declares {key}, which is no field of Config");
        }
    }

    #[test]
    fn keys_and_variables_are_declared_once() {
        let mut paths = HashSet::new();
        let mut names = HashSet::new();
        for key in KEYS {
            assert!(paths.insert(key.path), "{} is declared twice", key.path);
            if let Some(env) = &key.env {
                assert!(names.insert(env.name), "{} is declared twice", env.name);
                assert!(env.name.starts_with("KPS_"), "{}", env.name);
            }
        }
    }

    /// A key's variable sets what the key sets in a file (checked with the value the sample shows).
    #[test]
    fn each_variable_sets_its_key() {
        let defaults = Config::default();
        for key in KEYS {
            let (Some(env), value) = (
                &key.env,
                match &key.shown {
                    Shown::Default(value) => value(&defaults),
                    Shown::Example(example) => (*example).to_owned(),
                },
            ) else {
                continue;
            };
            let (table, name) = key.path.rsplit_once('.').map_or(("", key.path), |(t, n)| (t, n));
            let text =
                if table.is_empty() { format!("{name} = {value}") } else { format!("[{table}]\n{name} = {value}") };
            let from_file = parse(&text);
            let from_env = load_with_env(env.name, &as_env_value(&value));
            assert_eq!(format!("{from_env:?}"), format!("{from_file:?}"), "{} and {}", env.name, key.path);
        }
    }
}
