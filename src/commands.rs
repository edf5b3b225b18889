//! The operator commands besides `serve`: `kps backup export`, `kps backup import`, `kps rewrap` and
//! `kps master-key generate|wrap|unwrap`.
//!
//! While a server holds the data directory's lock, `backup export` goes through that server's admin API
//! (`POST /admin/v1/backup`, admin token), so backups need no downtime; otherwise it opens the store itself.
//! `backup import` always needs the server stopped. That rule is about sled's data-directory lock: with
//! `store.backend = postgres` every command opens the database directly, as one more client of it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic_file::AtomicFile;
use crate::config::{Config, StoreBackend};
use crate::datadir::{DataDir, DataDirError};
use crate::service::RewrapOptions;
use crate::service::backup::{self, BackupError, ImportSummary};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Remote(String),
    #[error(transparent)]
    Keyring(#[from] crate::custody::KeyringError),
    #[error(transparent)]
    KmsConfig(#[from] crate::kms::KmsConfigError),
    /// The command does not apply (e.g. `wrap` on a keyring that is wrapped already); the text says why.
    #[error("{0}")]
    Refused(String),
}

/// `kps master-key generate [--print] [--kms-key NAME]`: with `print` the new keyring text is returned for
/// stdout (secret, unless wrapped) and the file is left alone; otherwise the file is rewritten and a one-line
/// report returned. A running server picks the new current key up at its next start.
///
/// A wrapped keyring stays wrapped: it is unwrapped (one KMS call), given the new key and wrapped again under
/// `kms_key`, else under the KMS key it names. With `kms_key` (default: `custody.master_key_kms_key`) a new
/// keyring is created wrapped; a plaintext one is refused (`kps master-key wrap` converts it first).
pub async fn master_key_generate(
    config: &Config,
    print: bool,
    kms_key: Option<&str>,
) -> Result<zeroize::Zeroizing<String>, CommandError> {
    use crate::custody::keyring::{self, OnDisk};
    let path = config.master_key_path();
    // With auto-unseal configured, a new keyring is never written in plaintext, flag or not.
    let kms_key = kms_key.or(config.custody.master_key_kms_key.as_deref());
    if !print && !config.data_dir.exists() && config.custody.master_key_file.is_none() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(|source| CommandError::File { path: config.data_dir.clone(), source })?;
    }
    let (text, id) = match (keyring::read_on_disk(&path, config.secrets.allow_group_readable)?, kms_key) {
        (None | Some(OnDisk::Plain(_)), None) => keyring::generate(&path, print, config.secrets.allow_group_readable)?,
        (Some(OnDisk::Plain(_)), Some(name)) => {
            return Err(CommandError::Refused(format!(
                "{} holds a plaintext keyring: wrap it first (kps master-key wrap --kms-key {name}), then add keys \
                 with kps master-key generate",
                path.display()
            )));
        }
        (None, Some(name)) => {
            let kms = kms_client(config)?;
            let (plain, id) = keyring::add_key(None, &path)?;
            let wrapped = crate::custody::WrappedKeyring::wrap(&plain, name, &kms)
                .await
                .map_err(|error| crate::custody::KeyringError::kms_failed(&path, error))?;
            (zeroize::Zeroizing::new(wrapped.render()), id)
        }
        (Some(OnDisk::Wrapped(wrapped)), name) => {
            let kms = kms_client(config)?;
            let plain = unwrap_keyring(&path, &wrapped, &kms).await?;
            let (plain, id) = keyring::add_key(Some(&plain), &path)?;
            let name = name.unwrap_or(&wrapped.kms_key);
            let rewrapped = crate::custody::WrappedKeyring::wrap(&plain, name, &kms)
                .await
                .map_err(|error| crate::custody::KeyringError::kms_failed(&path, error))?;
            (zeroize::Zeroizing::new(rewrapped.render()), id)
        }
    };
    if print {
        return Ok(text);
    }
    if crate::custody::wrapped_keyring::is_wrapped(&text) == Some(true) {
        keyring::write_text(&path, text.as_bytes())?;
        return Ok(zeroize::Zeroizing::new(format!(
            "master key {id} added to {} and made current; the keyring is wrapped by the KMS\n",
            path.display()
        )));
    }
    Ok(zeroize::Zeroizing::new(format!("master key {id} added to {} and made current\n", path.display())))
}

/// `kps master-key wrap [--kms-key NAME]`: converts the plaintext keyring file into one wrapped by the KMS
/// key `kms_key` (default `custody.master_key_kms_key`), replacing it atomically. Returns a one-line report.
pub async fn master_key_wrap(config: &Config, kms_key: Option<&str>) -> Result<String, CommandError> {
    use crate::custody::keyring::{self, OnDisk};
    let path = config.master_key_path();
    let name = kms_key.or(config.custody.master_key_kms_key.as_deref()).ok_or_else(|| {
        CommandError::Refused(
            "name the KMS key that wraps the keyring: --kms-key NAME, or custody.master_key_kms_key".into(),
        )
    })?;
    let plain = match keyring::read_on_disk(&path, config.secrets.allow_group_readable)? {
        Some(OnDisk::Plain(plain)) => plain,
        Some(OnDisk::Wrapped(wrapped)) => {
            return Err(CommandError::Refused(format!(
                "{} is wrapped already (by KMS key {}, key id {}): nothing to do (kps master-key unwrap converts it \
                 back)",
                path.display(),
                wrapped.kms_key,
                wrapped.key_id
            )));
        }
        None => return Err(no_keyring(&path)),
    };
    crate::custody::MasterKeyring::from_text(&plain, &path)?;
    let kms = kms_client(config)?;
    let wrapped = crate::custody::WrappedKeyring::wrap(&plain, name, &kms)
        .await
        .map_err(|error| crate::custody::KeyringError::kms_failed(&path, error))?;
    keyring::write_text(&path, wrapped.render().as_bytes())?;
    Ok(format!(
        "wrapped {} with KMS key {name} (key id {}): the file holds no plaintext master key now",
        path.display(),
        wrapped.key_id
    ))
}

/// `kps master-key unwrap`: converts a wrapped keyring file back to the plaintext keyring (leaving the KMS),
/// replacing it atomically. Returns a one-line report.
pub async fn master_key_unwrap(config: &Config) -> Result<String, CommandError> {
    use crate::custody::keyring::{self, OnDisk};
    let path = config.master_key_path();
    let wrapped = match keyring::read_on_disk(&path, config.secrets.allow_group_readable)? {
        Some(OnDisk::Wrapped(wrapped)) => wrapped,
        Some(OnDisk::Plain(_)) => {
            return Err(CommandError::Refused(format!(
                "{} is a plaintext keyring already: nothing to unwrap",
                path.display()
            )));
        }
        None => return Err(no_keyring(&path)),
    };
    let kms = kms_client(config)?;
    let plain = unwrap_keyring(&path, &wrapped, &kms).await?;
    keyring::write_text(&path, plain.expose().as_bytes())?;
    Ok(format!(
        "unwrapped {}: it holds the plaintext keyring now (unset custody.master_key_kms_key before kps serve)",
        path.display()
    ))
}

/// The configured KMS client; the master-key commands that wrap or unwrap need one.
fn kms_client(config: &Config) -> Result<crate::kms::KmsClient, CommandError> {
    let roots = crate::tls::CaBundle::from_config(&config.tls).map_err(|e| CommandError::Refused(e.to_string()))?;
    crate::kms::from_config(&config.kms, config.secrets.allow_group_readable, roots.as_ref())?.ok_or_else(|| {
        CommandError::Refused(
            "a wrapped master keyring needs the KMS: set kms.provider (huawei or aws) and its kms.* settings".into(),
        )
    })
}

/// The keyring `wrapped` (the file at `path`) unwrapped with one KMS call and validated.
async fn unwrap_keyring(
    path: &Path,
    wrapped: &crate::custody::WrappedKeyring,
    kms: &crate::kms::KmsClient,
) -> Result<crate::custody::keyring::KeyringText, CommandError> {
    let plain = wrapped.unwrap(kms).await.map_err(|error| crate::custody::KeyringError::kms_failed(path, error))?;
    crate::custody::MasterKeyring::from_text(&plain, path)?;
    Ok(plain)
}

fn no_keyring(path: &Path) -> CommandError {
    CommandError::Refused(format!("there is no master keyring at {}", path.display()))
}

/// How to reach a running server's admin API.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// Base URL; default `http://<listen>`.
    pub url: Option<String>,
    /// Admin credential, sent as `X-Auth-Token`.
    pub token: Option<String>,
}

/// The store of an offline command, or word that a running server holds sled's data directory.
enum Opened {
    /// The store (with the locked data directory, for sled).
    Store(Arc<dyn Store>, Option<DataDir>),
    Locked,
}

/// Opens the configured store; a sled data directory locked by a running server is `Opened::Locked` (that
/// server is reached through its admin API instead).
async fn open_store(config: &Config) -> Result<Opened, CommandError> {
    match crate::open_store(config).await {
        Ok((store, data_dir)) => Ok(Opened::Store(store, data_dir)),
        Err(crate::ServeError::DataDir(DataDirError::Locked { .. })) => Ok(Opened::Locked),
        Err(crate::ServeError::DataDir(error)) => Err(error.into()),
        Err(crate::ServeError::Store(error)) => Err(error.into()),
        Err(error) => Err(CommandError::Remote(error.to_string())),
    }
}

/// Where the command's records are, for its report.
fn store_name(config: &Config) -> String {
    match config.store.backend {
        StoreBackend::Sled => config.data_dir.display().to_string(),
        StoreBackend::Postgres => "the PostgreSQL database".into(),
    }
}

/// `kps backup export FILE`: returns a one-line report.
pub async fn backup_export(config: &Config, file: &Path, remote: &Remote) -> Result<String, CommandError> {
    match open_store(config).await? {
        Opened::Store(store, _data_dir) => {
            let bytes = export_store_to_file(store, file).await?;
            Ok(format!("exported {bytes} bytes from {} to {}", store_name(config), file.display()))
        }
        Opened::Locked => {
            let bytes = export_remote(config, file, remote).await?;
            Ok(format!("exported {bytes} bytes from the running server to {}", file.display()))
        }
    }
}

/// `kps db migrate`: brings the PostgreSQL schema up to this binary's version without serving (replicas do
/// the same at startup). Returns a one-line report.
pub async fn db_migrate(config: &Config) -> Result<String, CommandError> {
    if config.store.backend != StoreBackend::Postgres {
        return Err(CommandError::Remote(
            "kps db migrate is for store.backend = postgres (a sled store is migrated when it is opened)".into(),
        ));
    }
    let url = config.postgres_url().map_err(|e| CommandError::Remote(e.to_string()))?;
    let roots = crate::tls::CaBundle::from_config(&config.tls).map_err(|e| CommandError::Remote(e.to_string()))?;
    let store = crate::store::postgres::PostgresStore::connect_trusting(&url, 1, roots.as_ref())?;
    let (before, after) = store.migrate().await?;
    Ok(if before == after {
        format!("the database schema kps is current (version {after})")
    } else {
        format!("migrated the database schema kps from version {before} to {after}")
    })
}

/// `kps rewrap`: re-seals escrowed keys in the store, or through the running server's admin API when one
/// holds the data directory. Returns a one-line report.
pub async fn rewrap(config: &Config, options: &RewrapOptions, remote: &Remote) -> Result<String, CommandError> {
    let report = match open_store(config).await? {
        Opened::Store(store, _data_dir) => {
            let pool = crate::keypair::pool::RsaKeyPool::disabled();
            let service = crate::checked_service(config, Arc::clone(&store), pool)
                .await
                .map_err(|e| CommandError::Remote(e.to_string()))?;
            let report = service
                .rewrap(&options.target(), options.dry_run)
                .await
                .map_err(|e| CommandError::Remote(format!("rewrap failed: {e}")))?;
            store.flush().await?;
            serde_json::json!(report)
        }
        Opened::Locked => {
            let token = remote.token.as_deref().ok_or_else(|| {
                CommandError::Remote(format!(
                    "{} is in use by a running kps: pass --token (an admin credential) to rewrap through its admin API",
                    config.data_dir.display()
                ))
            })?;
            let base = remote.url.clone().unwrap_or_else(|| config.admin_base_url());
            let url = format!("{}/admin/v1/rewrap", base.trim_end_matches('/'));
            let remote_error = |e: reqwest::Error| CommandError::Remote(format!("{url}: {e}"));
            let response = reqwest::Client::new()
                .post(&url)
                .header("x-auth-token", token)
                .json(options)
                .send()
                .await
                .map_err(remote_error)?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.map_err(remote_error)?;
            if !status.is_success() {
                return Err(CommandError::Remote(format!("{url} answered {status}: {body}")));
            }
            body
        }
    };
    let verb = if options.dry_run { "would re-seal" } else { "re-sealed" };
    Ok(format!("{verb} {} of {} escrowed private keys", report["rewrapped"], report["escrowed"]))
}

/// `kps backup import FILE [--force]` (sled: server stopped; postgres: one transaction into the database).
pub async fn backup_import(config: &Config, file: &Path, force: bool) -> Result<ImportSummary, CommandError> {
    let text = std::fs::read_to_string(file).map_err(|source| CommandError::File { path: file.into(), source })?;
    let Opened::Store(store, _data_dir) = open_store(config).await? else {
        return Err(CommandError::Remote(format!(
            "{} is in use by a running kps: stop the server before `kps backup import`",
            config.data_dir.display()
        )));
    };
    let summary = backup::import(store.as_ref(), &text, force).await?;
    store.flush().await?;
    Ok(summary)
}

async fn export_store_to_file(store: Arc<dyn Store>, file: &Path) -> Result<u64, CommandError> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(8);
    let exporter = tokio::spawn(async move { backup::export(store.as_ref(), &sender).await });
    let mut out = BackupFile::create(file)?;
    while let Some(chunk) = receiver.recv().await {
        out.write(&chunk)?;
    }
    exporter.await.map_err(|e| CommandError::Remote(format!("export task failed: {e}")))??;
    out.commit(file)
}

async fn export_remote(config: &Config, file: &Path, remote: &Remote) -> Result<u64, CommandError> {
    let token = remote.token.as_deref().ok_or_else(|| {
        CommandError::Remote(format!(
            "{} is in use by a running kps: pass --token (an admin credential) to export through its admin API",
            config.data_dir.display()
        ))
    })?;
    let base = remote.url.clone().unwrap_or_else(|| config.admin_base_url());
    let url = format!("{}/admin/v1/backup", base.trim_end_matches('/'));
    let remote_error = |e: reqwest::Error| CommandError::Remote(format!("{url}: {e}"));
    let mut response =
        reqwest::Client::new().post(&url).header("x-auth-token", token).send().await.map_err(remote_error)?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(CommandError::Remote(format!("{url} answered {status}: {body}")));
    }
    let mut out = BackupFile::create(file)?;
    while let Some(chunk) = response.chunk().await.map_err(remote_error)? {
        out.write(&chunk)?;
    }
    out.commit(file)
}

/// The backup file being written: `FILE.partial` (created new, 0600, never through a symlink), renamed to
/// `FILE` once complete and synced, so a failed export never leaves a truncated backup under the real name.
struct BackupFile(AtomicFile);

impl BackupFile {
    fn create(path: &Path) -> Result<Self, CommandError> {
        AtomicFile::create(path, ".partial").map(Self).map_err(|source| {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            CommandError::File { path: partial.into(), source }
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CommandError> {
        self.0.write(bytes).map_err(|source| CommandError::File { path: self.0.temp_path().into(), source })
    }

    fn commit(self, path: &Path) -> Result<u64, CommandError> {
        self.0.commit().map_err(|source| CommandError::File { path: path.into(), source })
    }
}

/// `kps config check`: the configuration as `kps serve` would load it, checked without serving. Every file it
/// names must exist; the secret files (master keyring, tokens and credentials files, TLS key, KMS SK file,
/// PostgreSQL URL file) must pass the secret-file mode rule; the policy file must parse. The answer is the
/// list of what was checked followed by the effective settings as TOML, secrets redacted; the error is the
/// first problem found.
pub fn config_check(config: &Config) -> Result<String, String> {
    use crate::config::secret_file;
    config.validate().map_err(|e| e.to_string())?;
    config.listen_addr().map_err(|e| e.to_string())?;
    config.admin_listen_addr().map_err(|e| e.to_string())?;
    let allow_group = config.secrets.allow_group_readable;
    let mut checked = Vec::new();
    let secret_files = [
        ("auth.tokens_file", config.auth.tokens_file.as_deref()),
        ("auth.credentials_file", config.auth.credentials_file.as_deref()),
        ("tls.key_file", config.tls.key_file.as_deref()),
        ("kms.sk_file", config.kms.sk_file.as_deref()),
        ("kms.security_token_file", config.kms.security_token_file.as_deref()),
        ("store.postgres_url_file", config.store.postgres_url_file.as_deref()),
    ];
    for (key, path) in secret_files {
        let Some(path) = path else { continue };
        // Read (and dropped, zeroized) only to apply the one secret-file rule.
        secret_file::read(path, allow_group).map_err(|e| format!("{key}: {e}"))?;
        checked.push(format!("{key} {}: secret file, mode ok", path.display()));
    }
    let master_key = config.master_key_path();
    if config.custody.allow_default {
        if master_key.exists() {
            // Read and parsed as serve reads it (a wrapped file's format and fields included).
            let on_disk = crate::custody::keyring::read_on_disk(&master_key, allow_group)
                .map_err(|e| format!("master keyring: {e}"))?;
            let wrapped = matches!(on_disk, Some(crate::custody::keyring::OnDisk::Wrapped(_)));
            if wrapped && config.kms.provider.is_none() {
                return Err(format!(
                    "master keyring {} is wrapped by a KMS key, but no KMS is configured (kms.provider): kps serve \
                     could not unwrap it",
                    master_key.display()
                ));
            }
            if let (false, Some(key)) = (wrapped, &config.custody.master_key_kms_key) {
                return Err(format!(
                    "master keyring {} is plaintext, but custody.master_key_kms_key = {key:?} requires it wrapped \
                     (kps master-key wrap)",
                    master_key.display()
                ));
            }
            let form = if wrapped { "wrapped by a KMS key" } else { "plaintext" };
            checked.push(format!("master keyring {}: secret file, mode ok, {form}", master_key.display()));
        } else if let Some(key) = &config.custody.master_key_kms_key {
            return Err(format!(
                "master keyring {}: no such file; with custody.master_key_kms_key make it with kps master-key \
                 generate --kms-key {key}",
                master_key.display()
            ));
        } else if config.custody.master_key_file.is_some() {
            return Err(format!("custody.master_key_file {}: no such file", master_key.display()));
        } else {
            checked.push(format!("master keyring {}: absent, kps serve creates it", master_key.display()));
        }
    }
    for (key, path) in
        [("tls.cert_file", config.tls.cert_file.as_deref()), ("kms.ak_file", config.kms.ak_file.as_deref())]
    {
        let Some(path) = path else { continue };
        std::fs::metadata(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
        checked.push(format!("{key} {}: exists", path.display()));
    }
    if let Some(path) = &config.audit.file {
        let state = crate::audit_file::AuditFile::check(path).map_err(|e| format!("audit.file: {e}"))?;
        checked.push(format!("audit.file {}: {state}", path.display()));
    }
    if let Some(bundle) = crate::tls::CaBundle::from_config(&config.tls).map_err(|e| e.to_string())? {
        checked.push(format!("tls.ca_file {}: CA bundle, parses", bundle.path().display()));
    }
    if let Some(path) = &config.policy.file {
        crate::api::policy::Policy::load(path).map_err(|e| e.to_string())?;
        checked.push(format!("policy.file {}: parses", path.display()));
    }
    let settings = toml::to_string(config).map_err(|e| format!("cannot render the settings: {e}"))?;
    let mut report = String::from("# kps config check: ok\n");
    for line in checked {
        report.push_str(&format!("# {line}\n"));
    }
    report.push_str("\n# Effective settings (file, environment and flags; secrets redacted, unset keys omitted):\n");
    report.push_str(&settings);
    Ok(report)
}
