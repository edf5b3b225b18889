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
use crate::{connections, custody, datadir, kms, page_cache, store, tls};

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
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the application state over an opened store: sets up authentication (tokens file, Keystone client)
/// and the policy (`policy.file` over the defaults), loads (or creates) the master keyring when the `default`
/// encryptor is allowed, and starts the RSA key pool.
pub fn state(config: &Config, store: Arc<dyn Store>) -> Result<AppState, ServeError> {
    state_trusting(config, store, outgoing_roots(config)?.as_ref())
}

/// `tls.ca_file`, read and checked: the trust anchors of every outgoing TLS client (KMS, Keystone,
/// PostgreSQL), handed to each as data. A missing, empty or invalid bundle refuses to start.
fn outgoing_roots(config: &Config) -> Result<Option<tls::CaBundle>, ServeError> {
    Ok(tls::CaBundle::from_config(&config.tls)?)
}

/// [`state`] with `tls.ca_file` already loaded.
fn state_trusting(
    config: &Config,
    store: Arc<dyn Store>,
    roots: Option<&tls::CaBundle>,
) -> Result<AppState, ServeError> {
    let authenticator = Authenticator::from_config_trusting(&config.auth, config.secrets.allow_group_readable, roots)?;
    let policy = match &config.policy.file {
        Some(path) => api::policy::Policy::load(path)?,
        None => api::policy::Policy::default(),
    };
    let service = service_trusting(config, store, RsaKeyPool::new(config.keygen.rsa_pool_size), roots)?;
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
    })
}

/// Checks the master keyring against the verifiers recorded in `store`, creating the file only for a store
/// that never used one, and records verifiers for new key ids (`service::master_keys`). `serve` and the offline
/// commands that open escrows call it before [`service`], so that a missing or replaced keyring refuses to
/// start instead of being silently replaced (even when new `default` seals are disabled: older records
/// still need it).
pub async fn check_master_keyring(config: &Config, store: &dyn Store) -> Result<(), ServeError> {
    let path = config.master_key_path();
    // Replicas share one keyring: one made here would be this replica's alone.
    if config.store.backend == StoreBackend::Postgres && !path.exists() {
        return Err(ServeError::Startup(format!(
            "the master keyring {} does not exist: with store.backend = postgres kps never creates one; give every \
             replica the same keyring file (custody.master_key_file; `kps master-key generate` makes a new one)",
            path.display()
        )));
    }
    crate::service::master_keys::open_keyring(&path, config.secrets.allow_group_readable, store).await?;
    Ok(())
}

/// The key pair service over `store` with its custody: the master keyring (loaded; created if missing,
/// unless [`check_master_keyring`] refused it before) and the KMS, if any.
pub fn service(config: &Config, store: Arc<dyn Store>, pool: RsaKeyPool) -> Result<KeypairService, ServeError> {
    service_trusting(config, store, pool, outgoing_roots(config)?.as_ref())
}

/// [`service`] with `tls.ca_file` already loaded.
fn service_trusting(
    config: &Config,
    store: Arc<dyn Store>,
    pool: RsaKeyPool,
    roots: Option<&tls::CaBundle>,
) -> Result<KeypairService, ServeError> {
    let keyring =
        custody::MasterKeyring::load_or_create(&config.master_key_path(), config.secrets.allow_group_readable)?;
    tracing::info!(current = keyring.current_id(), "master keyring loaded");
    let kms =
        kms::from_config(&config.kms, config.secrets.allow_group_readable, roots)?.map(custody::KmsEncryptor::new);
    let custody = custody::Custody::new(custody::LocalEncryptor::new(keyring), kms);
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
    let roots = outgoing_roots(&config)?;
    let (store, data_dir) = open_store_trusting(&config, roots.as_ref()).await?;
    check_master_keyring(&config, store.as_ref()).await?;
    let state = Arc::new(state_trusting(&config, Arc::clone(&store), roots.as_ref())?);
    state.service.prepare().await.map_err(|e| ServeError::Startup(e.to_string()))?;

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
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            tracing::info!("serving HTTPS");
            Some(tls::server_config(cert, key, config.secrets.allow_group_readable)?)
        }
        _ => None,
    };
    run_until_stopped(listener, tls, app(state), limits, grace, stop_admin).await;
    store.flush().await?;
    tracing::info!("kps stopped");
    drop(data_dir);
    Ok(())
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
