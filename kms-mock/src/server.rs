//! The HTTP side of `kms-mock`: the listener and its graceful stop ([`MockServer`]), the routes, the
//! request checks every KMS call passes (known action, POST, body size, authentication, project, JSON object,
//! `sequence`) and the test aids under `/_mock/` (faults, call counts; loopback callers only). What a call
//! answers is `actions`' business.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use kps::signing::{self, SignedRequest, VerifyError};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::actions::{KmsFault, Params, json_response, serve_action};
use crate::config::{MockConfig, MockError};
use crate::fault::{Fault, FaultSlot};
use crate::keys::{KeyStore, initial_keys};
use crate::lock;

const MAX_BODY: usize = 1 << 20;
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

/// A running mock. Dropping it stops the server.
pub struct MockServer {
    addr: SocketAddr,
    keys: Vec<(String, String)>,
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
        let state_file = config.state_file.clone();
        let shared = Arc::new(Shared {
            config,
            keys: KeyStore::new(keys, state_file),
            fault: FaultSlot::default(),
            calls: Mutex::new(BTreeMap::new()),
        });
        shared.keys.save()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(Arc::clone(&shared)).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, keys: listed, shutdown: Some(shutdown), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// (alias, key id) of the keys present at start, in creation order.
    pub fn keys(&self) -> &[(String, String)] {
        &self.keys
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

struct Shared {
    config: MockConfig,
    keys: KeyStore,
    fault: FaultSlot,
    calls: Mutex<BTreeMap<String, u64>>,
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
            shared.fault.set(Some(fault));
            StatusCode::NO_CONTENT.into_response()
        }
        _ => KmsFault::new(StatusCode::BAD_REQUEST, "KMS.0202", "Request body is not valid JSON.").into_response(),
    }
}

async fn clear_fault(State(shared): State<Arc<Shared>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN.into_response();
    }
    shared.fault.set(None);
    StatusCode::NO_CONTENT.into_response()
}

/// Test aid (not in the spec): how many requests reached each action.
async fn list_calls(State(shared): State<Arc<Shared>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN.into_response();
    }
    json_response(StatusCode::OK, &json!(*lock(&shared.calls)))
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
    if let Some(fault) = shared.fault.take() {
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
    let answer = serve_action(&shared.keys, action, &Params(params))?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// With `--security-token`, what Huawei's IAM asks of temporary credentials: the right `X-Security-Token`,
/// covered by the (already verified) signature.
fn check_security_token(config: &MockConfig, headers: &HeaderMap) -> Result<(), KmsFault> {
    let Some(expected) = &config.security_token else {
        return Ok(());
    };
    let refused = || KmsFault::new(StatusCode::UNAUTHORIZED, "KMS.0302", "Invalid security token.");
    let presented = headers.get("x-security-token").ok_or_else(refused)?;
    if Sha256::digest(expected.expose_secret().as_bytes()) != Sha256::digest(presented.as_bytes()) {
        return Err(refused());
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let signed = authorization
        .split(',')
        .find_map(|part| part.trim().strip_prefix("SignedHeaders="))
        .is_some_and(|names| names.split(';').any(|name| name.eq_ignore_ascii_case("x-security-token")));
    if signed { Ok(()) } else { Err(refused()) }
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
        Ok(_) => check_security_token(config, headers),
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
