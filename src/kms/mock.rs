//! `kms-mock`: a stand-alone Huawei KMS v1.0 subset for development and tests (spec/kms-huawei.md §5) — the
//! data-key calls of §4, the key lifecycle calls of §5.2, Huawei-shaped errors (§6), SDK-HMAC-SHA256
//! verification through `crate::signing`, fault injection (§5.4) and an optional state file. Not for
//! production: key material lives in memory and, with `--state`, in a plain JSON file.
//!
//! The binary (`src/bin/kms-mock.rs`) only parses [`MockArgs`] and calls [`run`]; tests start the same server
//! in-process with [`MockServer::start`].

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::is_key_id;
use crate::signing::{self, SignedRequest, VerifyError};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9600";
pub const DEFAULT_PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const DOMAIN_ID: &str = "b168fe00ff56492495a7d22974df2d0b";
const REGION: &str = "mock-region-1";
const MAX_BODY: usize = 1 << 20;
const MATERIAL_LEN: usize = 32;
const CIPHER_FORMAT: u8 = 0x01;
const KEY_ID_LEN: usize = 36;
const NONCE_LEN: usize = 12;
const STATE_ENABLED: &str = "2";
const STATE_DISABLED: &str = "3";
const STATE_PENDING_DELETION: &str = "4";
const ACTIONS: &[&str] = &[
    "create-key",
    "enable-key",
    "disable-key",
    "schedule-key-deletion",
    "cancel-key-deletion",
    "describe-key",
    "list-keys",
    "create-datakey",
    "create-datakey-without-plaintext",
    "encrypt-datakey",
    "decrypt-datakey",
];

/// Command line of `kms-mock` (flag > env > default, §5.1). No `Debug`: it holds the SK.
#[derive(Clone, clap::Parser)]
#[command(name = "kms-mock", version, about = "Huawei Cloud KMS v1.0 data-key API subset for development and tests")]
pub struct MockArgs {
    /// Bind address.
    #[arg(long, env = "KMS_MOCK_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// The only project served; another project in the path answers 403 KMS.0306.
    #[arg(long = "project-id", env = "KMS_MOCK_PROJECT_ID", default_value = DEFAULT_PROJECT_ID)]
    pub project_id: String,
    /// Accepted access key; without --ak/--sk signatures are not checked.
    #[arg(long, env = "KMS_MOCK_AK")]
    pub ak: Option<String>,
    /// Accepted secret key.
    #[arg(long, env = "KMS_MOCK_SK", hide_env_values = true)]
    pub sk: Option<String>,
    /// Also accept `X-Auth-Token: TOKEN` instead of a signature.
    #[arg(long, env = "KMS_MOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Pre-create an enabled AES_256 key (repeatable); random id unless given.
    #[arg(long = "key", value_name = "ALIAS[=UUID]")]
    pub keys: Vec<String>,
    /// Read-only JSON array of keys to pre-create: [{"id", "alias", "state", "spec", "material_hex"?}].
    #[arg(long, env = "KMS_MOCK_SEED", value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// JSON file holding the keys: loaded at start, rewritten atomically after each change.
    #[arg(long, env = "KMS_MOCK_STATE", value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// What a mock server serves, without the listen address.
#[derive(Clone, Default)]
pub struct MockConfig {
    pub project_id: String,
    /// Accepted AK and SK; `None` = signatures are not checked.
    pub credentials: Option<(String, SecretString)>,
    pub token: Option<SecretString>,
    /// `--key ALIAS[=UUID]` values.
    pub keys: Vec<String>,
    pub seed: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
}

impl MockConfig {
    /// A memory-only mock serving `project_id` with the given credentials (tests).
    pub fn new(project_id: &str, credentials: Option<(&str, &str)>) -> Self {
        Self {
            project_id: project_id.to_owned(),
            credentials: credentials.map(|(ak, sk)| (ak.to_owned(), SecretString::from(sk))),
            ..Self::default()
        }
    }
}

impl TryFrom<MockArgs> for MockConfig {
    type Error = MockError;

    fn try_from(args: MockArgs) -> Result<Self, MockError> {
        let credentials = match (args.ak, args.sk) {
            (Some(ak), Some(sk)) => Some((ak, SecretString::from(sk))),
            (None, None) => None,
            _ => return Err(MockError::Config("--ak and --sk must be given together".into())),
        };
        let project_ok =
            (1..=64).contains(&args.project_id.len()) && args.project_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !project_ok {
            return Err(MockError::Config("--project-id: expected 1-64 letters or digits".into()));
        }
        Ok(Self {
            project_id: args.project_id,
            credentials,
            token: args.token.map(SecretString::from),
            keys: args.keys,
            seed: args.seed,
            state_file: args.state,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// `kms-mock`: start, print `key <alias> <id>` per key and `listening on <addr>`, serve until SIGTERM/SIGINT.
pub async fn run(args: MockArgs) -> Result<(), MockError> {
    let listen = args.listen.clone();
    let server = MockServer::start(&listen, MockConfig::try_from(args)?).await?;
    let mut stdout = std::io::stdout().lock();
    for (alias, id) in server.keys() {
        writeln!(stdout, "key {alias} {id}")?;
    }
    writeln!(stdout, "listening on {}", server.addr())?;
    stdout.flush()?;
    drop(stdout);
    crate::connections::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

/// A fault to inject into the next `count` KMS calls (§5.4).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer this status with `KMS.0101` instead of serving.
    #[serde(default)]
    pub status: Option<u16>,
    /// Sleep this long before serving (or failing).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer 200 with this JSON document instead of serving (a malformed reply, e.g. `{}`).
    #[serde(default)]
    pub answer: Option<Value>,
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// A running mock. Dropping it stops the server.
pub struct MockServer {
    addr: SocketAddr,
    keys: Vec<(String, String)>,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl MockServer {
    /// Loads the state file, seed and `--key`s, binds `listen` (port 0 picks a free port) and serves in the
    /// background.
    pub async fn start(listen: &str, config: MockConfig) -> Result<Self, MockError> {
        let keys = initial_keys(&config)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| MockError::Bind { addr: listen.to_owned(), source })?;
        let addr = listener.local_addr()?;
        let listed = keys.iter().map(|k| (k.alias.clone(), k.id.clone())).collect();
        let shared = Arc::new(Shared {
            config,
            keys: Mutex::new(keys),
            fault: Mutex::new(None),
            calls: Mutex::new(BTreeMap::new()),
        });
        shared.save()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(Arc::clone(&shared)).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, keys: listed, shared, shutdown: Some(shutdown), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the `kms.endpoint` of this mock.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (alias, key id) of the keys present at start, in creation order.
    pub fn keys(&self) -> &[(String, String)] {
        &self.keys
    }

    /// How many requests reached `action` (faulted ones included).
    pub fn calls(&self, action: &str) -> u64 {
        lock(&self.shared.calls).get(action).copied().unwrap_or(0)
    }

    pub fn inject_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = Some(fault);
    }

    /// Sets a key's state directly (tests), as if by the lifecycle calls.
    pub fn set_key_state(&self, key_id: &str, state: &str) {
        if let Some(key) = lock(&self.shared.keys).iter_mut().find(|k| k.id == key_id) {
            key.state = state.to_owned();
        }
    }

    /// Stops accepting, finishes in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

struct MockKey {
    id: String,
    alias: String,
    state: String,
    spec: String,
    description: String,
    material: Zeroizing<[u8; MATERIAL_LEN]>,
    creation_date: String,
    scheduled_deletion_date: String,
}

impl MockKey {
    fn new(id: String, alias: String, state: String, spec: String, material: Zeroizing<[u8; MATERIAL_LEN]>) -> Self {
        Self {
            id,
            alias,
            state,
            spec,
            description: String::new(),
            material,
            creation_date: now_ms().to_string(),
            scheduled_deletion_date: String::new(),
        }
    }

    fn details(&self) -> Value {
        json!({
            "key_id": self.id,
            "domain_id": DOMAIN_ID,
            "key_alias": self.alias,
            "realm": REGION,
            "key_spec": self.spec,
            "key_usage": "ENCRYPT_DECRYPT",
            "key_description": self.description,
            "creation_date": self.creation_date,
            "scheduled_deletion_date": self.scheduled_deletion_date,
            "key_state": self.state,
            "default_key_flag": "0",
            "key_type": "1",
            "expiration_time": "",
            "origin": "kms",
            "key_rotation_enabled": "false",
            "sys_enterprise_project_id": "0",
            "keystore_id": "0",
        })
    }
}

/// One key in the state file (and, with `material_hex` optional, in the seed file).
#[derive(Serialize, Deserialize)]
struct StoredKey {
    id: String,
    alias: String,
    state: String,
    spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    material_hex: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    creation_date: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scheduled_deletion_date: String,
}

impl StoredKey {
    fn into_key(self, path: &Path) -> Result<MockKey, MockError> {
        let bad = |message: String| MockError::File { path: path.into(), message };
        if !is_key_id(&self.id) {
            return Err(bad(format!("key id {:?} is not in the key id form", self.id)));
        }
        if !valid_alias(&self.alias) {
            return Err(bad(format!("key alias {:?} is invalid", self.alias)));
        }
        let material = match &self.material_hex {
            Some(text) => {
                let mut material = Zeroizing::new([0u8; MATERIAL_LEN]);
                hex::decode_to_slice(text, material.as_mut())
                    .map_err(|_| bad(format!("material_hex of key {} is not 64 hex characters", self.id)))?;
                material
            }
            None => random_material(),
        };
        let mut key = MockKey::new(self.id, self.alias, self.state, self.spec, material);
        key.description = self.description;
        if !self.creation_date.is_empty() {
            key.creation_date = self.creation_date;
        }
        key.scheduled_deletion_date = self.scheduled_deletion_date;
        Ok(key)
    }
}

/// State file keys, then seed keys, then `--key`s; a key whose id or alias is already present is skipped.
fn initial_keys(config: &MockConfig) -> Result<Vec<MockKey>, MockError> {
    let mut keys: Vec<MockKey> = Vec::new();
    let read = |path: &Path| -> Result<Vec<StoredKey>, MockError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| MockError::File { path: path.into(), message: e.to_string() })?,
        );
        serde_json::from_str(&text).map_err(|e| MockError::File { path: path.into(), message: e.to_string() })
    };
    let add = |keys: &mut Vec<MockKey>, key: MockKey| {
        if !keys.iter().any(|k| k.id == key.id || k.alias == key.alias) {
            keys.push(key);
        }
    };
    if let Some(path) = config.state_file.as_deref().filter(|p| p.exists()) {
        let mut loaded = read(path)?.into_iter().map(|k| k.into_key(path)).collect::<Result<Vec<_>, _>>()?;
        loaded.sort_by_key(|k| k.creation_date.parse::<u128>().unwrap_or(0));
        for key in loaded {
            add(&mut keys, key);
        }
    }
    if let Some(path) = config.seed.as_deref() {
        for stored in read(path)? {
            add(&mut keys, stored.into_key(path)?);
        }
    }
    for arg in &config.keys {
        let (alias, id) = match arg.split_once('=') {
            Some((alias, id)) => (alias, id.to_owned()),
            None => (arg.as_str(), uuid::Uuid::new_v4().to_string()),
        };
        if !valid_alias(alias) || !is_key_id(&id) {
            return Err(MockError::Config(format!("--key {arg}: expected ALIAS[=UUID]")));
        }
        let key = MockKey::new(id, alias.to_owned(), STATE_ENABLED.into(), "AES_256".into(), random_material());
        add(&mut keys, key);
    }
    Ok(keys)
}

struct Shared {
    config: MockConfig,
    /// In creation order (list-keys paging order).
    keys: Mutex<Vec<MockKey>>,
    fault: Mutex<Option<Fault>>,
    calls: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Handlers never leave the data half-updated across a panic point that matters for a mock.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Rewrites the state file, if any, atomically (temp file + rename), mode 0600.
    fn save(&self) -> Result<(), MockError> {
        let Some(path) = self.config.state_file.as_deref() else {
            return Ok(());
        };
        let stored: Vec<StoredKey> = lock(&self.keys)
            .iter()
            .map(|k| StoredKey {
                id: k.id.clone(),
                alias: k.alias.clone(),
                state: k.state.clone(),
                spec: k.spec.clone(),
                material_hex: Some(hex::encode(k.material.as_ref())),
                description: k.description.clone(),
                creation_date: k.creation_date.clone(),
                scheduled_deletion_date: k.scheduled_deletion_date.clone(),
            })
            .collect();
        let text = Zeroizing::new(serde_json::to_vec_pretty(&stored).unwrap_or_default());
        let file_error = |e: std::io::Error| MockError::File { path: path.into(), message: e.to_string() };
        let tmp = path.with_extension("tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(file_error)?;
            file.write_all(&text).map_err(file_error)?;
            file.sync_all().map_err(file_error)?;
        }
        std::fs::rename(&tmp, path).map_err(file_error)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }))
        .route("/_mock/fault", axum::routing::post(set_fault).delete(clear_fault))
        .route("/_mock/calls", get(list_calls))
        .route("/v1.0/{project_id}/kms/{action}", any(kms_call))
        .fallback(|| async { KmsFault::new(StatusCode::NOT_FOUND, "KMS.0201", "Unknown request path.") })
        .with_state(shared)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    response
}

/// A Huawei-shaped error answer (§6).
#[derive(Debug)]
struct KmsFault {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl KmsFault {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn invalid(param: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "KMS.0308", format!("Invalid {param}."))
    }

    fn missing(param: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "KMS.0204", format!("Missing required parameter {param}."))
    }

    fn unknown_key(key_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "KMS.0207", format!("Key {key_id} does not exist."))
    }
}

impl IntoResponse for KmsFault {
    fn into_response(self) -> Response {
        let body = json!({"error": {"error_code": self.code, "error_msg": self.message}});
        json_response(self.status, &body)
    }
}

async fn set_fault(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN.into_response();
    }
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) if fault.status.is_none_or(|s| StatusCode::from_u16(s).is_ok()) => {
            *lock(&shared.fault) = Some(fault);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0202", "Request body is not valid JSON.").into_response(),
    }
}

async fn clear_fault(State(shared): State<Arc<Shared>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN.into_response();
    }
    *lock(&shared.fault) = None;
    StatusCode::NO_CONTENT.into_response()
}

/// Test aid (not in the spec): how many requests reached each action.
async fn list_calls(State(shared): State<Arc<Shared>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN.into_response();
    }
    json_response(StatusCode::OK, &json!(*lock(&shared.calls)))
}

/// Takes one use of the injected fault, if any.
fn take_fault(shared: &Shared) -> Option<Fault> {
    let mut slot = lock(&shared.fault);
    let fault = slot.as_mut()?;
    if fault.count == 0 {
        *slot = None;
        return None;
    }
    fault.count -= 1;
    let taken = fault.clone();
    if fault.count == 0 {
        *slot = None;
    }
    Some(taken)
}

async fn kms_call(
    State(shared): State<Arc<Shared>>,
    UrlPath((project_id, action)): UrlPath<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, KmsFault> {
    let Some(&action) = ACTIONS.iter().find(|a| **a == action) else {
        return Err(KmsFault::new(StatusCode::NOT_FOUND, "KMS.0201", "Unknown request path."));
    };
    if method != Method::POST {
        return Err(KmsFault::new(StatusCode::METHOD_NOT_ALLOWED, "KMS.0201", "Unknown request path."));
    }
    *lock(&shared.calls).entry(action.to_owned()).or_default() += 1;
    if let Some(fault) = take_fault(&shared) {
        if let Some(delay) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if let Some(status) = fault.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(KmsFault::new(status, "KMS.0101", "injected fault"));
        }
        if let Some(answer) = &fault.answer {
            return Ok(json_response(StatusCode::OK, answer));
        }
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0203", "Request body is too large."));
    };
    authenticate(&shared.config, &method, &uri, &headers, &body)?;
    if project_id != shared.config.project_id {
        return Err(KmsFault::new(StatusCode::FORBIDDEN, "KMS.0306", "Project mismatch."));
    }
    let Ok(Value::Object(params)) = serde_json::from_slice::<Value>(&body) else {
        return Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0202", "Request body is not valid JSON."));
    };
    if let Some(sequence) = params.get("sequence") {
        if sequence.as_str().is_none_or(|s| s.chars().count() > 36) {
            return Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0206", "Invalid sequence."));
        }
    }
    let answer = serve_action(&shared, action, &Params(params))?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// §2.2 verification with the mock's codes, or `X-Auth-Token` when `--token` is set.
fn authenticate(
    config: &MockConfig,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), KmsFault> {
    let Some((access_key, secret_key)) = &config.credentials else {
        return Ok(());
    };
    let unauthorized = |code, message: &str| KmsFault::new(StatusCode::UNAUTHORIZED, code, message);
    if !headers.contains_key("authorization") {
        if let Some(token) = headers.get("x-auth-token") {
            let matches = config.token.as_ref().is_some_and(|expected| {
                Sha256::digest(expected.expose_secret().as_bytes()) == Sha256::digest(token.as_bytes())
            });
            return if matches { Ok(()) } else { Err(unauthorized("KMS.0302", "Invalid token.")) };
        }
    }
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let request = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body,
    };
    match signing::verify(&request, time::OffsetDateTime::now_utc(), |ak| (ak == access_key).then_some(secret_key)) {
        Ok(_) => Ok(()),
        Err(VerifyError::Missing | VerifyError::Malformed) => {
            Err(unauthorized("KMS.0301", "Missing or malformed authentication information."))
        }
        Err(VerifyError::Date) => Err(unauthorized("KMS.0303", "Invalid X-Sdk-Date.")),
        Err(
            VerifyError::UnknownAccessKey
            | VerifyError::SignedHeaderAbsent
            | VerifyError::PayloadHashMismatch
            | VerifyError::Mismatch,
        ) => Err(unauthorized("KMS.0302", "Signature verification failed.")),
    }
}

/// Request parameters with Huawei's validation errors.
struct Params(Map<String, Value>);

impl Params {
    fn optional_str(&self, name: &str) -> Result<Option<&str>, KmsFault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(KmsFault::invalid(name)),
        }
    }

    fn required_str(&self, name: &str) -> Result<&str, KmsFault> {
        self.optional_str(name)?.ok_or_else(|| KmsFault::missing(name))
    }

    /// A decimal number sent as a string (Huawei) or, leniently, as a JSON integer.
    fn optional_number(&self, name: &str) -> Result<Option<u64>, KmsFault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text))
                if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                text.parse().map(Some).map_err(|_| KmsFault::invalid(name))
            }
            Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(|| KmsFault::invalid(name)),
            Some(_) => Err(KmsFault::invalid(name)),
        }
    }

    fn required_number(&self, name: &str) -> Result<u64, KmsFault> {
        self.optional_number(name)?.ok_or_else(|| KmsFault::missing(name))
    }

    fn key_id(&self) -> Result<&str, KmsFault> {
        let key_id = self.required_str("key_id")?;
        if !is_key_id(key_id) {
            return Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0205", "Invalid key_id."));
        }
        Ok(key_id)
    }

    /// `additional_authenticated_data`, at most 128 characters.
    fn aad(&self) -> Result<&str, KmsFault> {
        let aad = self.optional_str("additional_authenticated_data")?.unwrap_or("");
        if aad.chars().count() > 128 {
            return Err(KmsFault::invalid("additional_authenticated_data"));
        }
        Ok(aad)
    }
}

fn valid_alias(alias: &str) -> bool {
    (1..=255).contains(&alias.len())
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
}

fn random_material() -> Zeroizing<[u8; MATERIAL_LEN]> {
    let mut material = Zeroizing::new([0u8; MATERIAL_LEN]);
    OsRng.fill_bytes(material.as_mut());
    material
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn find<'k>(keys: &'k mut [MockKey], key_id: &str) -> Result<&'k mut MockKey, KmsFault> {
    keys.iter_mut().find(|k| k.id == key_id).ok_or_else(|| KmsFault::unknown_key(key_id))
}

/// Data-key calls need an enabled key.
fn require_enabled(key: &MockKey) -> Result<(), KmsFault> {
    match key.state.as_str() {
        STATE_ENABLED => Ok(()),
        STATE_DISABLED => {
            Err(KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0209", format!("Key {} is disabled.", key.id)))
        }
        STATE_PENDING_DELETION => Err(KmsFault::new(
            StatusCode::BAD_REQUEST,
            "KMS.0210",
            format!("Key {} is scheduled for deletion.", key.id),
        )),
        other => Err(KmsFault::new(
            StatusCode::BAD_REQUEST,
            "KMS.0210",
            format!("Key {} is not usable in state {other}.", key.id),
        )),
    }
}

fn serve_action(shared: &Shared, action: &str, params: &Params) -> Result<Value, KmsFault> {
    let changed;
    let answer = {
        let mut keys = lock(&shared.keys);
        let keys = &mut *keys;
        match action {
            "create-key" => {
                changed = true;
                create_key(keys, params)
            }
            "enable-key" => {
                changed = true;
                transition(keys, params, &[STATE_DISABLED], STATE_ENABLED).map(|id| key_info_state(&id, STATE_ENABLED))
            }
            "disable-key" => {
                changed = true;
                transition(keys, params, &[STATE_ENABLED], STATE_DISABLED).map(|id| key_info_state(&id, STATE_DISABLED))
            }
            "schedule-key-deletion" => {
                changed = true;
                schedule_deletion(keys, params)
            }
            "cancel-key-deletion" => {
                changed = true;
                transition(keys, params, &[STATE_PENDING_DELETION], STATE_DISABLED).map(|id| {
                    if let Some(key) = keys.iter_mut().find(|k| k.id == id) {
                        key.scheduled_deletion_date.clear();
                    }
                    json!({"key_id": id, "key_state": STATE_DISABLED})
                })
            }
            other => {
                changed = false;
                match other {
                    "describe-key" => {
                        let key_id = params.key_id()?;
                        Ok(json!({"key_info": find(keys, key_id)?.details()}))
                    }
                    "list-keys" => list_keys(keys, params),
                    "create-datakey" => create_datakey(keys, params, true),
                    "create-datakey-without-plaintext" => create_datakey(keys, params, false),
                    "encrypt-datakey" => encrypt_datakey(keys, params),
                    "decrypt-datakey" => decrypt_datakey(keys, params),
                    _ => Err(KmsFault::new(StatusCode::NOT_FOUND, "KMS.0201", "Unknown request path.")),
                }
            }
        }
    }?;
    if changed {
        if let Err(error) = shared.save() {
            tracing::error!(%error, "kms-mock cannot write its state file");
            return Err(KmsFault::new(StatusCode::INTERNAL_SERVER_ERROR, "KMS.0101", "State file error."));
        }
    }
    Ok(answer)
}

fn key_info_state(key_id: &str, state: &str) -> Value {
    json!({"key_info": {"key_id": key_id, "key_state": state}})
}

fn create_key(keys: &mut Vec<MockKey>, params: &Params) -> Result<Value, KmsFault> {
    let alias = params.required_str("key_alias")?;
    if !valid_alias(alias) || keys.iter().any(|k| k.alias == alias) {
        return Err(KmsFault::invalid("key_alias"));
    }
    let spec = params.optional_str("key_spec")?.unwrap_or("AES_256");
    if !matches!(spec, "AES_256" | "SM4") {
        return Err(KmsFault::invalid("key_spec"));
    }
    let description = params.optional_str("key_description")?.unwrap_or("");
    if description.chars().count() > 255 {
        return Err(KmsFault::invalid("key_description"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut key = MockKey::new(id.clone(), alias.to_owned(), STATE_ENABLED.into(), spec.to_owned(), random_material());
    key.description = description.to_owned();
    keys.push(key);
    Ok(json!({"key_info": {"key_id": id, "domain_id": DOMAIN_ID, "region_id": REGION}}))
}

/// Moves a key from one of `from` to `to`; any other current state is `Invalid key_state.`
fn transition(keys: &mut [MockKey], params: &Params, from: &[&str], to: &str) -> Result<String, KmsFault> {
    let key = find(keys, params.key_id()?)?;
    if !from.contains(&key.state.as_str()) {
        return Err(KmsFault::invalid("key_state"));
    }
    to.clone_into(&mut key.state);
    Ok(key.id.clone())
}

fn schedule_deletion(keys: &mut [MockKey], params: &Params) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let days = params.required_number("pending_days")?;
    if !(7..=1096).contains(&days) {
        return Err(KmsFault::invalid("pending_days"));
    }
    let key = find(keys, key_id)?;
    if !matches!(key.state.as_str(), STATE_ENABLED | STATE_DISABLED) {
        return Err(KmsFault::invalid("key_state"));
    }
    key.state = STATE_PENDING_DELETION.into();
    key.scheduled_deletion_date = (now_ms() + u128::from(days) * 86_400_000).to_string();
    Ok(json!({"key_id": key.id, "key_state": STATE_PENDING_DELETION}))
}

fn list_keys(keys: &[MockKey], params: &Params) -> Result<Value, KmsFault> {
    let limit = params.optional_number("limit")?.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(KmsFault::invalid("limit"));
    }
    let offset = match params.optional_str("marker")? {
        None | Some("") => 0,
        Some(marker) => marker.parse::<usize>().map_err(|_| KmsFault::invalid("marker"))?,
    };
    let state = params.optional_str("key_state")?;
    let spec = params.optional_str("key_spec")?.unwrap_or("AES_256");
    let matching: Vec<&MockKey> = keys
        .iter()
        .filter(|k| state.is_none_or(|s| k.state == s))
        .filter(|k| spec == "ALL" || k.spec == spec)
        .collect();
    let limit = usize::try_from(limit).unwrap_or(1000);
    let page: Vec<&MockKey> = matching.iter().skip(offset).take(limit).copied().collect();
    let next = offset.saturating_add(limit);
    let truncated = next < matching.len();
    Ok(json!({
        "keys": page.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        "key_details": page.iter().map(|k| k.details()).collect::<Vec<_>>(),
        "next_marker": if truncated { next.to_string() } else { String::new() },
        "truncated": if truncated { "true" } else { "false" },
        "total": matching.len(),
    }))
}

/// create-datakey: `datakey_length` in **bits** wins over `key_spec`; default 256 bits.
fn create_datakey(keys: &mut [MockKey], params: &Params, with_plaintext: bool) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let bits = match params.optional_number("datakey_length")? {
        Some(bits) if (8..=8192).contains(&bits) && bits % 8 == 0 => bits,
        Some(_) => return Err(KmsFault::invalid("datakey_length")),
        None => match params.optional_str("key_spec")? {
            None | Some("AES_256") => 256,
            Some("AES_128") => 128,
            Some(_) => return Err(KmsFault::invalid("key_spec")),
        },
    };
    let aad = params.aad()?;
    let key = find(keys, key_id)?;
    require_enabled(key)?;
    let mut dek = Zeroizing::new(vec![0u8; usize::try_from(bits / 8).unwrap_or(32)]);
    OsRng.fill_bytes(&mut dek);
    let cipher_text = wrap(key, &dek, aad)?;
    let mut answer = json!({"key_id": key.id, "cipher_text": cipher_text});
    if with_plaintext {
        answer["plain_text"] = Value::String(hex::encode(dek.as_slice()));
    }
    Ok(answer)
}

/// encrypt-datakey: `plain_text` = hex(DEK) ‖ hex(SHA-256(DEK)); `datakey_plain_length` in bytes.
fn encrypt_datakey(keys: &mut [MockKey], params: &Params) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let plain_text = params.required_str("plain_text")?;
    let length = params.required_number("datakey_plain_length")?;
    if !(1..=1024).contains(&length) {
        return Err(KmsFault::invalid("datakey_plain_length"));
    }
    let length = usize::try_from(length).unwrap_or(0);
    let aad = params.aad()?;
    let bytes = Zeroizing::new(hex::decode(plain_text).map_err(|_| KmsFault::invalid("plain_text"))?);
    if bytes.len() != length + 32 || Sha256::digest(&bytes[..length])[..] != bytes[length..] {
        return Err(KmsFault::invalid("plain_text"));
    }
    let key = find(keys, key_id)?;
    require_enabled(key)?;
    let cipher_text = wrap(key, &bytes[..length], aad)?;
    Ok(json!({"key_id": key.id, "cipher_text": cipher_text, "datakey_length": length.to_string()}))
}

fn decrypt_datakey(keys: &mut [MockKey], params: &Params) -> Result<Value, KmsFault> {
    let key_id = params.key_id()?;
    let cipher_text = params.required_str("cipher_text")?;
    let length = params.required_number("datakey_cipher_length")?;
    let aad = params.aad()?;
    let invalid_cipher = || KmsFault::invalid("cipher_text");
    let bytes = hex::decode(cipher_text).map_err(|_| invalid_cipher())?;
    let header = 1 + KEY_ID_LEN + NONCE_LEN;
    if bytes.len() < header + 16 || bytes[0] != CIPHER_FORMAT || &bytes[1..=KEY_ID_LEN] != key_id.as_bytes() {
        return Err(invalid_cipher());
    }
    let key = find(keys, key_id)?;
    require_enabled(key)?;
    let nonce: [u8; NONCE_LEN] = bytes[1 + KEY_ID_LEN..header].try_into().map_err(|_| invalid_cipher())?;
    let dek = Zeroizing::new(
        cipher(key)
            .decrypt(&Nonce::from(nonce), Payload { msg: &bytes[header..], aad: &wrap_aad(&key.id, aad) })
            .map_err(|_| invalid_cipher())?,
    );
    if u64::try_from(dek.len()).ok() != Some(length) {
        return Err(KmsFault::invalid("datakey_cipher_length"));
    }
    Ok(json!({
        "data_key": hex::encode(dek.as_slice()),
        "datakey_length": dek.len().to_string(),
        "datakey_dgst": hex::encode(Sha256::digest(dek.as_slice())),
    }))
}

fn cipher(key: &MockKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.material))
}

fn wrap_aad(key_id: &str, aad: &str) -> Vec<u8> {
    [key_id.as_bytes(), aad.as_bytes()].concat()
}

/// §5.3: `0x01` ‖ key id (36 ASCII bytes) ‖ nonce (12) ‖ AES-256-GCM(material, AAD = key id ‖ aad) with tag.
fn wrap(key: &MockKey, dek: &[u8], aad: &str) -> Result<String, KmsFault> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher(key)
        .encrypt(&nonce, Payload { msg: dek, aad: &wrap_aad(&key.id, aad) })
        .map_err(|_| KmsFault::new(StatusCode::INTERNAL_SERVER_ERROR, "KMS.0101", "Encryption failed."))?;
    let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
    out.push(CIPHER_FORMAT);
    out.extend_from_slice(key.id.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(hex::encode(out))
}

#[cfg(test)]
mod tests;
