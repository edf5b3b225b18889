//! The HTTP edge: one router whose dispatch runs the checks of `spec/errors.md` §4 in order — request id,
//! body size, authentication, routing (404/405), microversion, content type and JSON parse, project match —
//! before handing a request to its API module (`nova`; V3 and admin come later).
//!
//! Routing is written out by hand (`route`), not left to a generic router, because the order of those
//! checks and the exact 404/405 semantics of Nova are part of the contract.

pub mod audit;
pub mod auth;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod microversion;
pub mod nova;
pub mod policy;
pub mod schema;
pub mod v3;
pub mod versions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use self::auth::{Authenticator, Caller};
use self::error::ApiError;
use self::microversion::MicroVersion;
use self::nova::{NovaApi, NovaRequest};
use self::policy::{Action, Policy, Target};
use crate::service::KeypairService;

/// Everything a request handler may use.
pub struct AppState {
    pub service: KeypairService,
    pub authenticator: Authenticator,
    pub policy: Policy,
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `custody.enabled`: escrowing and revealing private keys is allowed.
    pub custody_enabled: bool,
    /// The server terminates TLS itself: links default to `https://`.
    pub https: bool,
    /// What `GET /metrics` reports from the edge.
    pub metrics: metrics::ApiMetrics,
    /// `admin_listen` is set: `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are served by `admin_app`
    /// only.
    pub operations_on_admin_listener: bool,
    /// `limits.per_caller_*`; `None` when both are unlimited.
    pub caller_limits: Option<limits::CallerLimits>,
    /// Rendered Nova list pages (`cache.list_pages_mb`), current while `KeypairService::list_stamp` is.
    pub list_pages: crate::page_cache::PageCache,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// `listen`: the APIs, and the operations endpoints unless `admin_listen` is set.
    Api,
    /// `admin_listen`: the operations endpoints only.
    Admin,
}

/// The kps HTTP application (`listen`).
pub fn app(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch_api).with_state(state)
}

/// The operations endpoints alone (`admin_listen`): `/healthz`, `/readyz`, `/metrics`, `/openapi.json`; 404
/// otherwise.
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch_admin).with_state(state)
}

async fn dispatch_api(State(state): State<Arc<AppState>>, request: Request) -> Response {
    dispatch(&state, request, Listener::Api).await
}

async fn dispatch_admin(State(state): State<Arc<AppState>>, request: Request) -> Response {
    dispatch(&state, request, Listener::Admin).await
}

async fn dispatch(state: &AppState, request: Request, listener: Listener) -> Response {
    // A v4 UUID from the thread-local CSPRNG: no system call per request (Uuid::new_v4 reads getrandom).
    let request_id = format!("req-{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route_label = route(&path).map_or("unmatched", |matched| matched.label());
    let started = std::time::Instant::now();
    let handled = tokio::time::timeout(state.request_timeout, handle(state, request, &request_id, listener)).await;
    let mut response = match handled {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KPS.9004",
            format!("Request timed out. Request id {request_id}."),
        )
        .into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        for name in ["x-openstack-request-id", "x-compute-request-id", "x-request-id"] {
            headers.insert(name, value.clone());
        }
    }
    let elapsed = started.elapsed();
    state.metrics.record_request(route_label, &method, response.status().as_u16(), elapsed);
    tracing::info!(
        request_id,
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// A matched route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    VersionList,
    V20Document,
    V21Document,
    /// `GET /healthz`: liveness.
    Health,
    /// `GET /readyz`: the store takes writes and answers.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json`.
    OpenApi,
    /// `.../os-keypairs`.
    KeypairCollection {
        api: ApiRoot,
        project: Option<String>,
    },
    /// `.../os-keypairs/{name}` (name percent-decoded).
    Keypair {
        api: ApiRoot,
        project: Option<String>,
        name: String,
    },
    /// `POST /admin/v1/backup`: the backup stream.
    AdminBackup,
    /// `POST /admin/v1/rewrap`.
    AdminRewrap,
    /// `/v3/{project_id}/...`.
    V3 {
        project: String,
        route: v3::V3Route,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApiRoot {
    V2,
    V21,
}

impl Route {
    /// Methods this route serves, for matching and for `Allow`.
    fn allowed_methods(&self) -> &'static [Method] {
        match self {
            Route::KeypairCollection { .. } => &[Method::GET, Method::HEAD, Method::POST],
            Route::Keypair { .. } => &[Method::DELETE, Method::GET, Method::HEAD],
            Route::AdminBackup | Route::AdminRewrap => &[Method::POST],
            Route::V3 { route, .. } => route.allowed_methods(),
            _ => &[Method::GET, Method::HEAD],
        }
    }

    /// The route's name in metrics: its template, never a path value.
    fn label(&self) -> &'static str {
        match self {
            Route::VersionList => "versions",
            Route::V20Document => "v2_document",
            Route::V21Document => "v21_document",
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Metrics => "metrics",
            Route::OpenApi => "openapi",
            Route::KeypairCollection { api: ApiRoot::V21, .. } => "nova_keypairs",
            Route::Keypair { api: ApiRoot::V21, .. } => "nova_keypair",
            Route::KeypairCollection { api: ApiRoot::V2, .. } => "nova_v2_keypairs",
            Route::Keypair { api: ApiRoot::V2, .. } => "nova_v2_keypair",
            Route::AdminBackup => "admin_backup",
            Route::AdminRewrap => "admin_rewrap",
            Route::V3 { route, .. } => match route {
                v3::V3Route::Keypairs => "v3_keypairs",
                v3::V3Route::Keypair(_) => "v3_keypair",
                v3::V3Route::KeypairPrivateKey(_) => "v3_keypair_private_key",
                v3::V3Route::ImportPrivateKey => "v3_import_private_key",
                v3::V3Route::ExportPrivateKey => "v3_export_private_key",
                v3::V3Route::BatchImport => "v3_batch_import",
                v3::V3Route::BatchExport => "v3_batch_export",
                v3::V3Route::NeedsServers(operation) => match operation {
                    v3::NeedsServers::Associate => "v3_associate",
                    v3::NeedsServers::BatchAssociate => "v3_batch_associate",
                    v3::NeedsServers::Disassociate => "v3_disassociate",
                    v3::NeedsServers::Task => "v3_task",
                    v3::NeedsServers::RunningTasks => "v3_running_tasks",
                    v3::NeedsServers::FailedTasks => "v3_failed_tasks",
                    v3::NeedsServers::FailedTask => "v3_failed_task",
                },
            },
        }
    }

    /// `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the admin API `/admin/v1/*`: served on
    /// `admin_listen` alone when that is set (interface.md), so that a tenant-facing listener cannot reach
    /// backup or rewrap.
    fn is_operations_endpoint(&self) -> bool {
        matches!(
            self,
            Route::Health | Route::Ready | Route::Metrics | Route::OpenApi | Route::AdminBackup | Route::AdminRewrap
        )
    }

    fn needs_auth(&self) -> bool {
        matches!(
            self,
            Route::KeypairCollection { .. }
                | Route::Keypair { .. }
                | Route::AdminBackup
                | Route::AdminRewrap
                | Route::V3 { .. }
        )
    }
}

/// The OpenAPI 3.0 document of every route in `ROUTE_TABLE` (`GET /openapi.json`); a test keeps the two
/// in step.
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// One route kps serves: its metrics label, its path template (`{project_id}`, `{keypair_name}`,
/// `{task_id}` stand for one path segment each) and its methods, `HEAD` included wherever `GET` is.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub label: &'static str,
    pub template: &'static str,
    pub methods: &'static [Method],
}

const GET: &[Method] = &[Method::GET, Method::HEAD];
const GET_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
const POST: &[Method] = &[Method::POST];
const DELETE: &[Method] = &[Method::DELETE];

/// Every route kps serves. `route()` is written by hand; tests check it against this table, and the
/// OpenAPI document against both.
pub const ROUTE_TABLE: &[RouteSpec] = &[
    RouteSpec { label: "versions", template: "/", methods: GET },
    RouteSpec { label: "v2_document", template: "/v2", methods: GET },
    RouteSpec { label: "v2_document", template: "/v2/", methods: GET },
    RouteSpec { label: "v21_document", template: "/v2.1", methods: GET },
    RouteSpec { label: "v21_document", template: "/v2.1/", methods: GET },
    RouteSpec { label: "healthz", template: "/healthz", methods: GET },
    RouteSpec { label: "readyz", template: "/readyz", methods: GET },
    RouteSpec { label: "metrics", template: "/metrics", methods: GET },
    RouteSpec { label: "openapi", template: "/openapi.json", methods: GET },
    RouteSpec { label: "nova_keypairs", template: "/v2.1/os-keypairs", methods: GET_POST },
    RouteSpec {
        label: "nova_keypair",
        template: "/v2.1/os-keypairs/{keypair_name}",
        methods: &[Method::DELETE, Method::GET, Method::HEAD],
    },
    RouteSpec { label: "nova_keypairs", template: "/v2.1/{project_id}/os-keypairs", methods: GET_POST },
    RouteSpec {
        label: "nova_keypair",
        template: "/v2.1/{project_id}/os-keypairs/{keypair_name}",
        methods: &[Method::DELETE, Method::GET, Method::HEAD],
    },
    RouteSpec { label: "nova_v2_keypairs", template: "/v2/os-keypairs", methods: GET_POST },
    RouteSpec {
        label: "nova_v2_keypair",
        template: "/v2/os-keypairs/{keypair_name}",
        methods: &[Method::DELETE, Method::GET, Method::HEAD],
    },
    RouteSpec { label: "nova_v2_keypairs", template: "/v2/{project_id}/os-keypairs", methods: GET_POST },
    RouteSpec {
        label: "nova_v2_keypair",
        template: "/v2/{project_id}/os-keypairs/{keypair_name}",
        methods: &[Method::DELETE, Method::GET, Method::HEAD],
    },
    RouteSpec { label: "admin_backup", template: "/admin/v1/backup", methods: POST },
    RouteSpec { label: "admin_rewrap", template: "/admin/v1/rewrap", methods: POST },
    RouteSpec { label: "v3_keypairs", template: "/v3/{project_id}/keypairs", methods: GET_POST },
    RouteSpec {
        label: "v3_keypair",
        template: "/v3/{project_id}/keypairs/{keypair_name}",
        methods: &[Method::DELETE, Method::GET, Method::HEAD, Method::PUT],
    },
    RouteSpec {
        label: "v3_keypair_private_key",
        template: "/v3/{project_id}/keypairs/{keypair_name}/private-key",
        methods: DELETE,
    },
    RouteSpec {
        label: "v3_import_private_key",
        template: "/v3/{project_id}/keypairs/private-key/import",
        methods: POST,
    },
    RouteSpec {
        label: "v3_export_private_key",
        template: "/v3/{project_id}/keypairs/private-key/export",
        methods: POST,
    },
    RouteSpec { label: "v3_batch_import", template: "/v3/{project_id}/keypairs/batch-import", methods: POST },
    RouteSpec {
        label: "v3_batch_export",
        template: "/v3/{project_id}/keypairs/private-key/batch-export",
        methods: POST,
    },
    RouteSpec { label: "v3_associate", template: "/v3/{project_id}/keypairs/associate", methods: POST },
    RouteSpec { label: "v3_batch_associate", template: "/v3/{project_id}/keypairs/batch-associate", methods: POST },
    RouteSpec { label: "v3_disassociate", template: "/v3/{project_id}/keypairs/disassociate", methods: POST },
    RouteSpec { label: "v3_task", template: "/v3/{project_id}/tasks/{task_id}", methods: GET },
    RouteSpec { label: "v3_running_tasks", template: "/v3/{project_id}/running-tasks", methods: GET },
    RouteSpec {
        label: "v3_failed_tasks",
        template: "/v3/{project_id}/failed-tasks",
        methods: &[Method::DELETE, Method::GET, Method::HEAD],
    },
    RouteSpec { label: "v3_failed_task", template: "/v3/{project_id}/failed-tasks/{task_id}", methods: DELETE },
];

/// Paths below these prefixes need authentication before anything else is said about them.
fn is_api_path(path: &str) -> bool {
    ["/v2/", "/v2.1/", "/v3/", "/admin/"].iter().any(|prefix| path.starts_with(prefix))
}

fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// Maps a path to its route; `None` is a 404.
fn route(path: &str) -> Option<Route> {
    match path {
        "/" => return Some(Route::VersionList),
        "/v2" | "/v2/" => return Some(Route::V20Document),
        "/v2.1" | "/v2.1/" => return Some(Route::V21Document),
        "/healthz" => return Some(Route::Health),
        "/readyz" => return Some(Route::Ready),
        "/metrics" => return Some(Route::Metrics),
        "/openapi.json" => return Some(Route::OpenApi),
        "/admin/v1/backup" => return Some(Route::AdminBackup),
        "/admin/v1/rewrap" => return Some(Route::AdminRewrap),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v3/") {
        let segments: Vec<&str> = rest.split('/').collect();
        let (project, tail) = segments.split_first()?;
        if segments.iter().any(|s| s.is_empty()) || project.len() > 255 {
            return None;
        }
        return Some(Route::V3 { project: (*project).to_owned(), route: v3::V3Route::parse(tail)? });
    }
    let (api, rest) = if let Some(rest) = path.strip_prefix("/v2.1/") {
        (ApiRoot::V21, rest)
    } else {
        (ApiRoot::V2, path.strip_prefix("/v2/")?)
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let project = |segment: &str| (segment.len() <= 255).then(|| segment.to_owned());
    match segments.as_slice() {
        // The project-less forms, on v2 as on v2.1 (Nova serves both); `os-keypairs` in the first segment is
        // always this form, never a project of that name.
        ["os-keypairs"] => Some(Route::KeypairCollection { api, project: None }),
        ["os-keypairs", name] => Some(Route::Keypair { api, project: None, name: decode_segment(name) }),
        [p, "os-keypairs"] => Some(Route::KeypairCollection { api, project: Some(project(p)?) }),
        [p, "os-keypairs", name] => {
            Some(Route::Keypair { api, project: Some(project(p)?), name: decode_segment(name) })
        }
        _ => None,
    }
}

/// Runs the checks of errors.md §4 and the handler; every failure becomes its catalogue error.
async fn handle(state: &AppState, request: Request, request_id: &str, listener: Listener) -> Response {
    let (parts, body) = request.into_parts();
    // 1. Body size, whoever is asking.
    let body = match read_body(body, &parts.headers, state.max_body_bytes).await {
        Ok(body) => RequestBody(body),
        Err(error) => return error.into_response(),
    };
    let path = parts.uri.path();
    let matched = route(path);
    // The operations endpoints live on exactly one listener; the admin listener serves nothing else.
    let served_here = match (&matched, listener) {
        (Some(route), Listener::Admin) => route.is_operations_endpoint(),
        (None, Listener::Admin) => false,
        (Some(route), Listener::Api) => !(route.is_operations_endpoint() && state.operations_on_admin_listener),
        // An unknown path: 404, after authentication on API paths (below).
        (None, Listener::Api) => true,
    };
    if !served_here {
        return ApiError::not_found_route().into_response();
    }

    // 2. Authentication for every API path, routed or not.
    let caller = if matched.as_ref().is_some_and(Route::needs_auth) || (matched.is_none() && is_api_path(path)) {
        match state.authenticator.authenticate(&parts, &body).await {
            Ok(caller) => Some(caller),
            Err(error) => return state.authenticator.reject(error),
        }
    } else {
        None
    };
    // ... then the per-caller limits; the permit holds a concurrency slot until this function returns.
    let _permit = match (&caller, &state.caller_limits) {
        (Some(caller), Some(limits)) => match limits.admit(caller) {
            Ok(permit) => Some(permit),
            Err(limited) => {
                state.metrics.record_limited(limited.kind);
                return limited.into_error().into_response();
            }
        },
        _ => None,
    };

    // 3. Routing: 404, then 405 with Allow.
    let Some(matched) = matched else { return ApiError::not_found_route().into_response() };
    let allowed = matched.allowed_methods();
    if !allowed.contains(&parts.method) {
        let mut response = ApiError::method_not_allowed(parts.method.as_str()).into_response();
        let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    }

    if let Route::V3 { route, .. } = &matched
        && let Some(error) = route.needs_servers(&parts.method)
    {
        return error.into_response();
    }

    // 4. Microversion (/v2.1 only).
    let is_v21 = matches!(
        matched,
        Route::V21Document
            | Route::KeypairCollection { api: ApiRoot::V21, .. }
            | Route::Keypair { api: ApiRoot::V21, .. }
    );
    let version = if is_v21 {
        match MicroVersion::negotiate(&parts.headers) {
            Ok(version) => Some(version),
            Err((error, echoed)) => {
                let mut response = error.into_response();
                if let Some(echoed) = echoed {
                    echoed.write_headers(response.headers_mut());
                }
                return response;
            }
        }
    } else {
        None
    };

    let base_url = base_url(state, &parts.headers);
    let mut response = match (matched, caller) {
        (Route::VersionList, _) => json_response(&versions::version_list(&base_url)),
        (Route::V20Document, _) => json_response(&versions::v20_document(&base_url)),
        (Route::V21Document, _) => json_response(&versions::v21_document(&base_url)),
        (Route::Health, _) => json_response(&serde_json::json!({"status": "ok"})),
        (Route::Ready, _) => readiness(state).await,
        (Route::OpenApi, _) => {
            let mut response = OPENAPI_DOCUMENT.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        (Route::Metrics, _) => {
            let mut response = metrics::render(state).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
            response
        }
        (Route::KeypairCollection { api, project }, Some(caller)) => {
            let api = nova_api(api, version);
            let context = NovaContext { state, caller: &caller, api, base_url, request_id };
            context.collection(&parts, project.as_deref(), &body).await.unwrap_or_else(IntoResponse::into_response)
        }
        (Route::Keypair { api, project, name }, Some(caller)) => {
            let api = nova_api(api, version);
            let context = NovaContext { state, caller: &caller, api, base_url, request_id };
            context.item(&parts, project.as_deref(), &name).await.unwrap_or_else(IntoResponse::into_response)
        }
        (Route::AdminBackup, Some(caller)) => admin_backup(state, &caller),
        (Route::AdminRewrap, Some(caller)) => {
            admin_rewrap(state, &parts, &caller, &body, request_id).await.unwrap_or_else(IntoResponse::into_response)
        }
        (Route::V3 { project, route }, Some(caller)) => {
            v3_dispatch(state, &parts, &caller, &project, route, &body, request_id)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        (_, None) => ApiError::internal(request_id).into_response(),
    };
    if let Some(version) = version {
        version.write_headers(response.headers_mut());
    }
    response
}

/// Runs a V3 route: content type and JSON parse (POST/PUT), project match, then the handler.
async fn v3_dispatch(
    state: &AppState,
    parts: &axum::http::request::Parts,
    caller: &Caller,
    project: &str,
    route: v3::V3Route,
    body: &Bytes,
    request_id: &str,
) -> Result<Response, ApiError> {
    let json = if parts.method == Method::POST || parts.method == Method::PUT {
        Some(parse_json_body(&parts.headers, body)?)
    } else {
        None
    };
    check_project(Some(project), caller)?;
    let request = v3::V3Request { caller, query: parse_query(parts.uri.query()), request_id };
    let json = json.unwrap_or(RequestJson(Value::Null));
    match (route, &parts.method) {
        (v3::V3Route::Keypairs, &Method::POST) => v3::create(state, &request, &json).await,
        (v3::V3Route::Keypairs, _) => v3::list(state, &request).await,
        (v3::V3Route::Keypair(name), &Method::PUT) => v3::update(state, &request, &name, &json).await,
        (v3::V3Route::Keypair(name), &Method::DELETE) => v3::delete(state, &request, &name).await,
        (v3::V3Route::Keypair(name), _) => v3::show(state, &request, &name).await,
        (v3::V3Route::KeypairPrivateKey(name), _) => v3::clear_private_key(state, &request, &name).await,
        (v3::V3Route::ImportPrivateKey, _) => v3::import_private_key(state, &request, &json).await,
        (v3::V3Route::ExportPrivateKey, _) => v3::export_private_key(state, &request, &json).await,
        (v3::V3Route::BatchImport, _) => v3::batch_import(state, &request, &json).await,
        (v3::V3Route::BatchExport, _) => v3::batch_export(state, &request, &json).await,
        (v3::V3Route::NeedsServers(_), _) => Err(ApiError::internal(request_id)),
    }
}

/// `POST /admin/v1/rewrap`: `{"to_default": bool, "to_kms_key": "NAME", "dry_run": bool}` (all optional)
/// → the counts of `kps rewrap` (policy `kps:admin:rewrap`).
async fn admin_rewrap(
    state: &AppState,
    parts: &axum::http::request::Parts,
    caller: &Caller,
    body: &Bytes,
    request_id: &str,
) -> Result<Response, ApiError> {
    let json = parse_json_body(&parts.headers, body)?;
    state.policy.enforce(Action::AdminRewrap, caller, &Target::nothing())?;
    let options = crate::service::RewrapOptions::from_json(&json).map_err(ApiError::schema)?;
    let report = state
        .service
        .rewrap(&options.target(), options.dry_run)
        .await
        .map_err(|error| nova::service_error(error, request_id))?;
    tracing::info!(target: "kps::audit", user = caller.user_id, action = "rewrap", ?report, "custody action");
    Ok(nova::json_ok(StatusCode::OK, &serde_json::json!(report)))
}

/// `POST /admin/v1/backup`: streams the backup lines of `service::backup` (policy `kps:admin:backup`).
fn admin_backup(state: &AppState, caller: &Caller) -> Response {
    if let Err(denied) = state.policy.enforce(Action::AdminBackup, caller, &Target::nothing()) {
        return denied.into_response();
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (failed_sender, failed) = tokio::sync::oneshot::channel::<()>();
    let export = state.service.export_backup(sender);
    tokio::spawn(async move {
        if let Err(error) = export.await {
            tracing::error!(%error, "backup stream failed");
            let _ = failed_sender.send(());
        }
    });
    // After the last chunk, a failed export ends the body with an error, so the client sees a broken
    // transfer, never a short backup that looks complete.
    let stream = futures_util::stream::unfold((receiver, Some(failed)), |(mut receiver, failed)| async move {
        match receiver.recv().await {
            Some(chunk) => Some((Ok(Bytes::from(chunk)), (receiver, failed))),
            None => match failed?.await {
                Ok(()) => Some((Err(std::io::Error::other("backup failed")), (receiver, None))),
                Err(_) => None,
            },
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

fn nova_api(api: ApiRoot, version: Option<MicroVersion>) -> NovaApi {
    match (api, version) {
        (ApiRoot::V21, Some(version)) => NovaApi::V21(version),
        (ApiRoot::V21, None) => NovaApi::V21(MicroVersion::MIN),
        (ApiRoot::V2, _) => NovaApi::Legacy,
    }
}

struct NovaContext<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    api: NovaApi,
    base_url: String,
    request_id: &'a str,
}

impl NovaContext<'_> {
    fn request<'r>(&'r self, parts: &axum::http::request::Parts, project: Option<&'r str>) -> NovaRequest<'r> {
        NovaRequest {
            api: self.api,
            caller: self.caller,
            url_project: project,
            query: parse_query(parts.uri.query()),
            base_url: self.base_url.clone(),
            request_id: self.request_id,
        }
    }

    async fn collection(
        &self,
        parts: &axum::http::request::Parts,
        project: Option<&str>,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let request = self.request(parts, project);
        if parts.method == Method::POST {
            // 5. Content type and JSON parse; 6. project match.
            let json = parse_json_body(&parts.headers, body)?;
            check_project(project, self.caller)?;
            nova::create(self.state, &request, &json).await
        } else {
            check_project(project, self.caller)?;
            nova::list(self.state, &request).await
        }
    }

    async fn item(
        &self,
        parts: &axum::http::request::Parts,
        project: Option<&str>,
        name: &str,
    ) -> Result<Response, ApiError> {
        check_project(project, self.caller)?;
        let request = self.request(parts, project);
        if parts.method == Method::DELETE {
            nova::delete(self.state, &request, name).await
        } else {
            nova::show(self.state, &request, name).await
        }
    }
}

/// KPS.1005: the URL's project must be the caller's, administrators included.
fn check_project(url_project: Option<&str>, caller: &Caller) -> Result<(), ApiError> {
    match url_project {
        Some(project) if decode_segment(project) != caller.project_id => {
            Err(ApiError::project_mismatch(&decode_segment(project), &caller.project_id))
        }
        _ => Ok(()),
    }
}

/// Reads the whole body, refusing more than `limit` bytes (declared or actual) with 413.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::body_too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::body_too_large()),
        Err(_) => Err(ApiError::malformed_body()),
    }
}

/// Content types whose bodies are parsed as JSON (nova-keypairs.md §1).
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let Ok(text) = value.to_str() else { return false };
    let media_type = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(media_type.as_str(), "" | "text/plain" | "application/json" | "application/vnd.openstack.compute+json")
}

/// A request body as read: it may carry a private key (`key_protection.private_key`, batch items), so its
/// bytes are wiped when the request is done, if kps holds the only reference to them (a body that is a view
/// into hyper's read buffer is not kps's to wipe; design.md §5).
struct RequestBody(Bytes);

impl std::ops::Deref for RequestBody {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.0
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Ok(mut bytes) = std::mem::take(&mut self.0).try_into_mut() {
            Zeroize::zeroize(bytes.as_mut());
        }
    }
}

/// A parsed JSON request body whose strings are wiped when it is dropped (it may carry a private key).
struct RequestJson(Value);

impl std::ops::Deref for RequestJson {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Drop for RequestJson {
    fn drop(&mut self) {
        fn wipe(value: &mut Value) {
            match value {
                Value::String(text) => text.zeroize(),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(fields) => fields.values_mut().for_each(wipe),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// KPS.1009 for a foreign content type, KPS.1002 for text that is not JSON; an empty body is JSON `null`.
fn parse_json_body(headers: &HeaderMap, body: &Bytes) -> Result<RequestJson, ApiError> {
    if !is_json_content_type(headers) {
        return Err(ApiError::unsupported_media_type());
    }
    if body.is_empty() {
        return Ok(RequestJson(Value::Null));
    }
    serde_json::from_slice(body).map(RequestJson).map_err(|_| ApiError::malformed_body())
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// `public_url`, else `http://<Host>`.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = if state.https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

fn json_response(value: &Value) -> Response {
    (StatusCode::OK, nova::json_body(value)).into_response()
}

/// How long `GET /readyz` waits for the store's answer.
const READINESS_DEADLINE: Duration = Duration::from_secs(1);

/// `GET /readyz`: 200 while the store takes writes and answers a trivial read within a second, else 503
/// with the reason, so that a load balancer or orchestrator acts (`/healthz` stays a liveness check).
async fn readiness(state: &AppState) -> Response {
    let unready = match tokio::time::timeout(READINESS_DEADLINE, state.service.ready()).await {
        Ok(Ok(())) => return json_response(&serde_json::json!({"status": "ready"})),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {READINESS_DEADLINE:?}"),
    };
    tracing::warn!(reason = unready, "not ready: the store");
    let body = nova::json_body(&serde_json::json!({"status": "unready", "reason": "store"}));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// A response whose body carries a private key: `{"<wrapper>": {..fields.., "private_key": ...}}`.
///
/// The body is serialized straight into one pre-sized, zeroizing buffer (no intermediate `String` or
/// `Value` holds the key) that is wiped when the body has been sent. `private_key` is placed after
/// `public_key`. `Cache-Control: no-store` and `Pragma: no-cache` keep it out of caches.
pub fn private_key_response(
    status: StatusCode,
    fields: Map<String, Value>,
    wrapper: &str,
    private_key: &str,
) -> Response {
    let capacity =
        256 + 2 * private_key.len() + fields.iter().map(|(k, v)| k.len() + v.to_string().len() * 2).sum::<usize>();
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    let written = write_with_private_key(&mut buffer, &fields, wrapper, private_key);
    if written.is_err() || buffer.capacity() != capacity {
        // A reallocation would have left a copy behind; this cannot happen with the capacity above.
        tracing::error!("private key response buffer was reallocated");
    }
    let body = Body::from(Bytes::from_owner(buffer));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn write_with_private_key(
    out: &mut Vec<u8>,
    fields: &Map<String, Value>,
    wrapper: &str,
    private_key: &str,
) -> serde_json::Result<()> {
    out.push(b'{');
    serde_json::to_writer(&mut *out, wrapper)?;
    out.extend_from_slice(b":{");
    let mut first = true;
    let mut separator = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let after_public_key = fields.contains_key("public_key");
    let write_private_key = |out: &mut Vec<u8>, separator: &mut dyn FnMut(&mut Vec<u8>)| {
        separator(out);
        out.extend_from_slice(b"\"private_key\":");
        serde_json::to_writer(&mut *out, private_key)
    };
    for (key, value) in fields {
        separator(out);
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, value)?;
        if key == "public_key" {
            write_private_key(out, &mut separator)?;
        }
    }
    if !after_public_key {
        write_private_key(out, &mut separator)?;
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_route_table() {
        let collection =
            |api, project: Option<&str>| Some(Route::KeypairCollection { api, project: project.map(Into::into) });
        let item = |api, project: Option<&str>, name: &str| {
            Some(Route::Keypair { api, project: project.map(Into::into), name: name.into() })
        };
        let table = [
            ("/", Some(Route::VersionList)),
            ("/v2", Some(Route::V20Document)),
            ("/v2/", Some(Route::V20Document)),
            ("/v2.1", Some(Route::V21Document)),
            ("/v2.1/", Some(Route::V21Document)),
            ("/healthz", Some(Route::Health)),
            ("/readyz", Some(Route::Ready)),
            ("/v2.1/os-keypairs", collection(ApiRoot::V21, None)),
            ("/v2.1/os-keypairs/k%20one", item(ApiRoot::V21, None, "k one")),
            ("/v2.1/p-42/os-keypairs", collection(ApiRoot::V21, Some("p-42"))),
            ("/v2.1/p-42/os-keypairs/k", item(ApiRoot::V21, Some("p-42"), "k")),
            ("/v2/p-42/os-keypairs", collection(ApiRoot::V2, Some("p-42"))),
            ("/v2/p-42/os-keypairs/k", item(ApiRoot::V2, Some("p-42"), "k")),
            ("/v2/os-keypairs", collection(ApiRoot::V2, None)),
            ("/v2/os-keypairs/k%20one", item(ApiRoot::V2, None, "k one")),
            ("/v2/os-keypairs/", None),
            ("/v2.1/os-keypairs/", None),
            ("/v2.1/p-42/os-keypairs/", None),
            ("/v2.1/os-keypairs/k/", None),
            ("/v2.1/p/os-keypairs/k/x", None),
            ("/v2.1//os-keypairs", None),
            ("/v3/p/keypairs", Some(Route::V3 { project: "p".into(), route: v3::V3Route::Keypairs })),
            ("/v3/p/keypairs/", None),
            ("/nothing", None),
        ];
        for (path, expected) in table {
            assert_eq!(route(path), expected, "{path}");
        }
    }

    /// `template` with its placeholders filled in.
    fn sample_path(template: &str) -> String {
        template.replace("{project_id}", "p-42").replace("{keypair_name}", "k").replace("{task_id}", "t-1")
    }

    #[test]
    fn the_router_serves_exactly_the_route_table() {
        for spec in ROUTE_TABLE {
            let path = sample_path(spec.template);
            let matched = route(&path).unwrap_or_else(|| panic!("{path} is not routed"));
            assert_eq!(matched.label(), spec.label, "{path}");
            let mut served: Vec<&str> = matched.allowed_methods().iter().map(Method::as_str).collect();
            let mut listed: Vec<&str> = spec.methods.iter().map(Method::as_str).collect();
            served.sort_unstable();
            listed.sort_unstable();
            assert_eq!(served, listed, "{path}");
        }
    }

    #[test]
    fn every_route_label_is_in_the_route_table() {
        // One path per Route variant (and V3 sub-route); a new variant without a table row fails here.
        let paths = [
            "/",
            "/v2",
            "/v2.1",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/admin/v1/backup",
            "/admin/v1/rewrap",
            "/v2.1/os-keypairs",
            "/v2.1/os-keypairs/k",
            "/v2/os-keypairs",
            "/v2/os-keypairs/k",
            "/v2/p/os-keypairs",
            "/v2/p/os-keypairs/k",
            "/v3/p/keypairs",
            "/v3/p/keypairs/k",
            "/v3/p/keypairs/k/private-key",
            "/v3/p/keypairs/private-key/import",
            "/v3/p/keypairs/private-key/export",
            "/v3/p/keypairs/private-key/batch-export",
            "/v3/p/keypairs/batch-import",
            "/v3/p/keypairs/associate",
            "/v3/p/keypairs/batch-associate",
            "/v3/p/keypairs/disassociate",
            "/v3/p/tasks/t",
            "/v3/p/running-tasks",
            "/v3/p/failed-tasks",
            "/v3/p/failed-tasks/t",
        ];
        for path in paths {
            let label = route(path).unwrap_or_else(|| panic!("{path}")).label();
            assert!(ROUTE_TABLE.iter().any(|spec| spec.label == label), "{label} ({path}) is not in ROUTE_TABLE");
        }
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).expect("header"));
            is_json_content_type(&headers)
        };
        assert!(is_json_content_type(&HeaderMap::new()));
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "text/plain",
            "application/vnd.openstack.compute+json",
            "",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in ["application/xml", "text/html", "multipart/form-data"] {
            assert!(!with(bad), "{bad}");
        }
    }

    #[test]
    fn private_key_body_is_valid_json_with_the_key_after_public_key() {
        let mut fields = Map::new();
        fields.insert("name".into(), "k".into());
        fields.insert("public_key".into(), "ssh-rsa AAAA".into());
        fields.insert("user_id".into(), "u".into());
        let mut out = Vec::new();
        write_with_private_key(&mut out, &fields, "keypair", "-----BEGIN X-----\n\"q\"\n").expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            r#"{"keypair":{"name":"k","public_key":"ssh-rsa AAAA","private_key":"-----BEGIN X-----\n\"q\"\n","user_id":"u"}}"#
        );
    }
}
