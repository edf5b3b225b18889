//! The HTTP edge — the only place that knows JSON shapes, status codes and headers. `router` is the one
//! route table; `pipeline` runs the checks of `spec/errors.md` §4 in order for every request and then the
//! route's handler; `nova`, `v3` and `admin` parse requests into service calls and render the answers,
//! sharing `keypair_ops`; `error` chooses every catalogue code and status.
//!
//! Routing is a table of our own, not a generic router, because the order of those checks and the exact
//! 404/405 semantics of Nova are part of the contract. The edge sees the service, the model and the key pair
//! name rules, never the store, the KMS clients or custody.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cors;
pub mod error;
pub mod keypair_ops;
pub mod limits;
pub mod metrics;
pub mod microversion;
pub mod nova;
pub mod operations;
pub mod pipeline;
pub mod policy;
pub mod respond;
pub mod router;
pub mod schema;
pub mod v3;
pub mod versions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;

use self::auth::Authenticator;
use self::pipeline::Listener;
use self::policy::Policy;
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
    /// `cors.allowed_origins`; `None` when CORS is off.
    pub cors: Option<cors::Cors>,
    /// `audit.file` and `audit.fail_closed`.
    pub audit: audit::Audit,
    /// Certificate reloads on SIGHUP, counted by `app::serve` (reported when `https`).
    pub tls_reloads: Arc<crate::tls::ReloadCounts>,
}

/// The kps HTTP application (`listen`).
pub fn app(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch_api).with_state(state)
}

/// The operations endpoints alone (`admin_listen`): `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and
/// `/admin/v1/*`; 404 otherwise.
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch_admin).with_state(state)
}

async fn dispatch_api(State(state): State<Arc<AppState>>, request: Request) -> Response {
    pipeline::dispatch(&state, request, Listener::Api).await
}

async fn dispatch_admin(State(state): State<Arc<AppState>>, request: Request) -> Response {
    pipeline::dispatch(&state, request, Listener::Admin).await
}
