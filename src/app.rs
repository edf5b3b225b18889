//! Wiring: config → store → custody → service → the API state; `kps serve` with its listeners and graceful
//! shutdown. Nothing here decides behaviour: each piece is built from its config section and handed to the
//! layer above it.

use std::sync::Arc;
use std::time::Duration;

use crate::api::auth::Authenticator;
use crate::api::{self, AppState, admin_app, app};
use crate::config::{self, Config, StoreBackend};
use crate::keypair::pool::RsaKeyPool;
use crate::service::KeypairService;
use crate::store::Store;
use crate::{audit_file, connections, custody, datadir, kms, page_cache, store, tls};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Keyring(#[from] custody::KeyringError),
    #[error(transparent)]
    Kms(#[from] kms::KmsConfigError),
    #[error("startup failed: {0}")]
    Startup(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] api::auth::AuthError),
    #[error(transparent)]
    Policy(#[from] api::policy::PolicyError),
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Audit(#[from] audit_file::AuditFileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the application state over an opened store: sets up authentication (tokens file, Keystone client)
/// and the policy (`policy.file` over the defaults), loads (or creates) the master keyring when the `default`
/// encryptor is allowed, and starts the RSA key pool.
pub fn state(config: &Config, store: Arc<dyn Store>) -> Result<AppState, ServeError> {
    state_with_keyring(
        config,
        store,
        custody::KeyringSlot::open(load_plaintext_keyring(config)?),
        outgoing_roots(config)?.as_ref(),
    )
}

/// `tls.ca_file`, read and checked: the trust anchors of every outgoing TLS client (KMS, Keystone,
/// PostgreSQL), handed to each as data. A missing, empty or invalid bundle refuses to start.
fn outgoing_roots(config: &Config) -> Result<Option<tls::CaBundle>, ServeError> {
    Ok(tls::CaBundle::from_config(&config.tls)?)
}

/// [`state`] over a master keyring already loaded, or sealed until the KMS unwraps it (auto-unseal), with
/// `tls.ca_file` already loaded.
pub fn state_with_keyring(
    config: &Config,
    store: Arc<dyn Store>,
    keyring: custody::KeyringSlot,
    roots: Option<&tls::CaBundle>,
) -> Result<AppState, ServeError> {
    let authenticator = Authenticator::from_config_trusting(&config.auth, config.secrets.allow_group_readable, roots)?;
    let policy = match &config.policy.file {
        Some(path) => api::policy::Policy::load(path)?,
        None => api::policy::Policy::default(),
    };
    let pool = RsaKeyPool::new(config.keygen.rsa_pool_size);
    let service = service_with_keyring(config, store, pool, keyring, roots)?;
    Ok(AppState {
        service,
        authenticator,
        policy,
        public_url: config.public_url.clone(),
        max_body_bytes: config.limits.max_body_bytes,
        request_timeout: Duration::from_secs(config.limits.request_timeout_s),
        custody_enabled: config.custody.enabled,
        https: config.tls.cert_file.is_some(),
        metrics: api::metrics::ApiMetrics::default(),
        operations_on_admin_listener: config.admin_listen.is_some(),
        caller_limits: api::limits::CallerLimits::new(
            config.limits.per_caller_concurrency,
            config.limits.per_caller_rps,
        ),
        list_pages: page_cache::PageCache::new(config.cache.list_pages_mb.saturating_mul(1 << 20)),
        cors: api::cors::Cors::new(&config.cors),
        audit: api::audit::Audit::new(
            config.audit.file.as_deref().map(audit_file::AuditFile::open).transpose()?,
            config.audit.fail_closed,
        ),
        tls_reloads: Arc::default(),
    })
}

/// The master keyring as startup finds it, checked against the store when it is plaintext.
pub enum StartupKeyring {
    /// A plaintext keyring, checked against the verifiers the store records.
    Plain(custody::MasterKeyring),
    /// A keyring wrapped by a KMS key (auto-unseal): unwrapping and its check are still to come.
    Wrapped(custody::WrappedKeyring),
}

/// Reads the master keyring for `store`. A plaintext one is checked against the verifiers recorded in the
/// store, created only for a store that never used one, and the verifiers of new key ids are recorded
/// (`service::master_keys`): a missing or replaced keyring refuses to start instead of being silently
/// replaced (even when new `default` seals are disabled: older records still need it). A wrapped one is
/// returned as it is. With `custody.master_key_kms_key` set, a plaintext or missing keyring is refused.
pub async fn read_master_keyring(config: &Config, store: &dyn Store) -> Result<StartupKeyring, ServeError> {
    let path = config.master_key_path();
    let on_disk = custody::keyring::read_on_disk(&path, config.secrets.allow_group_readable)?;
    match (on_disk, &config.custody.master_key_kms_key) {
        (Some(custody::keyring::OnDisk::Wrapped(wrapped)), configured) => {
            if let Some(key) = configured.as_deref().filter(|key| *key != wrapped.kms_key && *key != wrapped.key_id) {
                tracing::warn!(
                    configured = key,
                    wrapped_by = wrapped.kms_key,
                    "the master keyring is wrapped by another KMS key than custody.master_key_kms_key names; it is \
                     unwrapped with the key it names (kps master-key generate --kms-key re-wraps it)"
                );
            }
            Ok(StartupKeyring::Wrapped(wrapped))
        }
        (Some(custody::keyring::OnDisk::Plain(_)), Some(key)) => Err(ServeError::Startup(format!(
            "the master keyring {} is plaintext, but custody.master_key_kms_key = {key:?} requires it wrapped by \
             that KMS key: convert it with `kps master-key wrap` (or unset custody.master_key_kms_key)",
            path.display()
        ))),
        (None, Some(key)) => Err(ServeError::Startup(format!(
            "the master keyring {} does not exist: with custody.master_key_kms_key kps never creates one by \
             itself; make it with `kps master-key generate --kms-key {key}` (or restore the keyring this store \
             was used with)",
            path.display()
        ))),
        (_, None) => {
            // Replicas share one keyring: one made here would be this replica's alone.
            if config.store.backend == StoreBackend::Postgres && !path.exists() {
                return Err(ServeError::Startup(format!(
                    "the master keyring {} does not exist: with store.backend = postgres kps never creates one; \
                     give every replica the same keyring file (custody.master_key_file; `kps master-key generate` \
                     makes a new one)",
                    path.display()
                )));
            }
            let keyring =
                crate::service::master_keys::open_keyring(&path, config.secrets.allow_group_readable, store).await?;
            Ok(StartupKeyring::Plain(keyring))
        }
    }
}

/// The key pair service of an offline command (`kps rewrap`) over `store`: its master keyring read and
/// checked by [`read_master_keyring`]; a wrapped one is unwrapped with the KMS now (any failure is an error).
pub async fn checked_service(
    config: &Config,
    store: Arc<dyn Store>,
    pool: RsaKeyPool,
) -> Result<KeypairService, ServeError> {
    let roots = outgoing_roots(config)?;
    match read_master_keyring(config, store.as_ref()).await? {
        StartupKeyring::Plain(keyring) => {
            service_with_keyring(config, store, pool, custody::KeyringSlot::open(keyring), roots.as_ref())
        }
        StartupKeyring::Wrapped(wrapped) => {
            let sealed = custody::KeyringSlot::sealed();
            let service = service_with_keyring(config, store, pool, sealed, roots.as_ref())?;
            service.unseal_master_keyring(&config.master_key_path(), &wrapped).await?;
            Ok(service)
        }
    }
}

/// The plaintext keyring at `custody.master_key_file` (created if missing).
fn load_plaintext_keyring(config: &Config) -> Result<custody::MasterKeyring, ServeError> {
    let keyring =
        custody::MasterKeyring::load_or_create(&config.master_key_path(), config.secrets.allow_group_readable)?;
    tracing::info!(current = keyring.current_id(), "master keyring loaded");
    Ok(keyring)
}

/// The key pair service over `store` with its custody: the plaintext master keyring (loaded; created if
/// missing) and the KMS, if any.
pub fn service(config: &Config, store: Arc<dyn Store>, pool: RsaKeyPool) -> Result<KeypairService, ServeError> {
    let keyring = custody::KeyringSlot::open(load_plaintext_keyring(config)?);
    service_with_keyring(config, store, pool, keyring, outgoing_roots(config)?.as_ref())
}

/// [`service`] over a master keyring already loaded, or sealed until the KMS unwraps it, with `tls.ca_file`
/// already loaded.
pub fn service_with_keyring(
    config: &Config,
    store: Arc<dyn Store>,
    pool: RsaKeyPool,
    keyring: custody::KeyringSlot,
    roots: Option<&tls::CaBundle>,
) -> Result<KeypairService, ServeError> {
    let kms =
        kms::from_config(&config.kms, config.secrets.allow_group_readable, roots)?.map(custody::KmsEncryptor::new);
    let custody = custody::Custody::new(custody::LocalEncryptor::with_slot(keyring), kms);
    Ok(KeypairService::new(store, config.quota(), pool)
        .with_min_rsa_bits(config.keys.min_rsa_bits)
        .with_custody(custody, config.custody.allow_default))
}

/// The configured store (`store.backend`): sled in the data directory, which stays locked while the returned
/// `DataDir` lives; or the PostgreSQL database, migrated, with no data directory (several replicas may run on
/// one machine).
pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, Option<datadir::DataDir>), ServeError> {
    let roots = match config.store.backend {
        StoreBackend::Sled => None,
        StoreBackend::Postgres => outgoing_roots(config)?,
    };
    open_store_trusting(config, roots.as_ref()).await
}

/// [`open_store`] with `tls.ca_file` already loaded.
async fn open_store_trusting(
    config: &Config,
    roots: Option<&tls::CaBundle>,
) -> Result<(Arc<dyn Store>, Option<datadir::DataDir>), ServeError> {
    match config.store.backend {
        StoreBackend::Sled => {
            let data_dir = datadir::DataDir::open(&config.data_dir)?;
            let store = data_dir.open_store()?;
            Ok((Arc::new(store), Some(data_dir)))
        }
        StoreBackend::Postgres => {
            let url = config.postgres_url()?;
            let store =
                store::postgres::PostgresStore::open_trusting(&url, config.store.postgres_pool_size, roots).await?;
            Ok((Arc::new(store), None))
        }
    }
}

/// Runs `kps serve` until SIGTERM/SIGINT: checks the configuration, opens the store (locking the data
/// directory for sled), serves, then finishes in-flight requests and flushes the store.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    config.validate()?;
    // SIGHUP is taken from the start (its default action would end the process): a reload while the store
    // opens or the keyring is unwrapped waits for the certificate to be served, and then reloads it.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let roots = outgoing_roots(&config)?;
    let (store, data_dir) = open_store_trusting(&config, roots.as_ref()).await?;
    let (state, sealed) = match read_master_keyring(&config, store.as_ref()).await? {
        StartupKeyring::Plain(keyring) => {
            tracing::info!(current = keyring.current_id(), "master keyring loaded");
            let keyring = custody::KeyringSlot::open(keyring);
            (state_with_keyring(&config, Arc::clone(&store), keyring, roots.as_ref())?, None)
        }
        StartupKeyring::Wrapped(wrapped) => {
            let sealed = custody::KeyringSlot::sealed();
            let state = state_with_keyring(&config, Arc::clone(&store), sealed, roots.as_ref())?;
            match state.service.unseal_master_keyring(&config.master_key_path(), &wrapped).await {
                Ok(()) => (state, None),
                // Only an unreachable KMS is waited for; any other failure needs an operator: no start.
                Err(error) if error.is_transient() => {
                    tracing::warn!(
                        %error,
                        "serving with the master keyring sealed: default custody answers 503 KPS.1801 until the KMS \
                         unwraps it (retried in the background)"
                    );
                    (state, Some(wrapped))
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    let state = Arc::new(state);
    state.service.prepare().await.map_err(|e| ServeError::Startup(e.to_string()))?;
    if let Some(wrapped) = sealed {
        let (state, path) = (Arc::clone(&state), config.master_key_path());
        tokio::spawn(async move { state.service.unseal_master_keyring_in_background(&path, &wrapped).await });
    }

    // kms.check_key: resolved once in the background; a failure only warns (startup never waits on the KMS).
    if let Some(key) = config.kms.check_key.clone() {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let Some(kms) = state.service.kms_client() else { return };
            match kms.resolve(&kms::KeyRef::parse(&key)).await {
                Ok(resolved) => tracing::info!(key, key_id = resolved.key_id, "kms.check_key resolved"),
                Err(error) => tracing::warn!(key, %error, "kms.check_key failed: escrows with this key will fail"),
            }
        });
    }

    // The certificate is read before any listener opens; from here on SIGHUP reloads it instead of
    // terminating kps (the signal's default action).
    let certificate = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            Some(Arc::new(tls::ServerCertificate::load(cert, key, config.secrets.allow_group_readable)?))
        }
        _ => None,
    };
    let tls = certificate.clone().map(tls::server_config).transpose()?;
    reload_on_sighup(hangups, certificate, Arc::clone(&state.tls_reloads));

    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
    let limits = connections::ConnectionLimits {
        header_timeout: Duration::from_secs(config.limits.header_timeout_s),
        max_connections: config.limits.max_connections,
    };
    // admin_listen: the operations endpoints on their own listener, stopped together with the main one.
    let (stop_admin, admin_stop) = tokio::sync::watch::channel(());
    if let Some(addr) = config.admin_listen_addr()? {
        let admin_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
        tracing::info!(admin_listen = %admin_listener.local_addr()?, "serving /healthz, /metrics, /openapi.json, /admin/v1");
        let mut admin_stop = admin_stop;
        let stopped = async move {
            let _ = admin_stop.changed().await;
        };
        tokio::spawn(connections::serve(admin_listener, None, admin_app(Arc::clone(&state)), limits, stopped));
    }
    match config.store.backend {
        StoreBackend::Sled => {
            tracing::info!(listen = %listener.local_addr()?, data_dir = %config.data_dir.display(), "kps is ready");
        }
        StoreBackend::Postgres => tracing::info!(listen = %listener.local_addr()?, store = "postgres", "kps is ready"),
    }
    // In-flight requests get the request deadline plus a margin to finish; a request stuck past that (a
    // blocked store thread cannot be cancelled) must not keep the process from stopping.
    let grace = Duration::from_secs(config.limits.request_timeout_s + 5);
    if tls.is_some() {
        tracing::info!("serving HTTPS");
    }
    run_until_stopped(listener, tls, app(state), limits, grace, stop_admin).await;
    store.flush().await?;
    tracing::info!("kps stopped");
    drop(data_dir);
    Ok(())
}

/// Handles `hangups` (SIGHUP) from now on: it reloads the TLS certificate and key files (`tls::ServerCertificate`), for
/// new handshakes only, while open connections go on; a reload that fails keeps the old certificate. Each
/// outcome is logged and counted in `counts`. Without TLS a SIGHUP is logged and ignored. The admin
/// listener (`admin_listen`) serves plain HTTP and has no certificate.
fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    certificate: Option<Arc<tls::ServerCertificate>>,
    counts: Arc<tls::ReloadCounts>,
) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(certificate) = &certificate else {
                tracing::warn!("SIGHUP ignored: TLS is off (no tls.cert_file), there is nothing to reload");
                continue;
            };
            // The error names the file and what is wrong with it, never key material (`tls`).
            match certificate.reload() {
                Ok(()) => {
                    counts.succeeded.increment();
                    tracing::info!("SIGHUP: TLS certificate reloaded; new connections use it");
                }
                Err(error) => {
                    counts.failed.increment();
                    tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the previous one stays in use");
                }
            }
        }
    });
}

/// Serves until SIGTERM/SIGINT, then lets in-flight requests finish for at most `grace`.
async fn run_until_stopped(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    app: axum::Router,
    limits: connections::ConnectionLimits,
    grace: Duration,
    stop_admin: tokio::sync::watch::Sender<()>,
) {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = connections::serve(listener, tls, app, limits, async move {
        connections::shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_admin.send(());
        let _ = stopping.send(());
    });
    tokio::select! {
        () = server => {}
        () = async move {
            let _ = stopped.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_s = grace.as_secs(), "in-flight requests did not finish in time; stopping anyway"),
    }
}
